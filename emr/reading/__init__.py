"""Reading studies: the radiologist's worklist, reports, measurements, the patient slip."""
