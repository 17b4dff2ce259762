"""The live FHIR R4 API (/fhir): searches and reads over the EMR, resources built in :mod:`emr.exports.fhir`."""
