"""The campaign core: plan -> units -> engine -> results store -> metrics.

A campaign is a target model x a data source x attacks x budgets, cut into units (one attack,
one parameter set, one batch of tiles). An engine runs units (the local engine by default) and
the driver writes each outcome to a SQLite results store as it arrives; metrics are computed
from the store. The command line, the showcase run, the benchmarks and the tests all run
attacks through :func:`medfool_ref.campaign.execute.run_attack` or a unit.
"""
