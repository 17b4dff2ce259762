"""Patients and encounters."""
