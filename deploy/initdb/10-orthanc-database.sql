-- The Orthanc index lives in its own database beside the EMR's.
CREATE DATABASE orthanc OWNER filmless;
