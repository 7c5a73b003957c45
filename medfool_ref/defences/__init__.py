"""Defences as code: input restoration, detection, hardening, certification, data sanitisation, integrity."""
