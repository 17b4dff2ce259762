"""Film-less patient access: share links, PINs and the viewer token of a link."""
