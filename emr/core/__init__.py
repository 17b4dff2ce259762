"""Pure rules with no Flask, no database and no DICOM network: the lowest layer, importable by every other."""
