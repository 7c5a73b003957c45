"""Reports: 8-bit images, figures and the per-attack summaries written from a results store."""
