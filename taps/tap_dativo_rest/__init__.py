"""tap-dativo-rest: a generic REST API tap configured by settings, reading pages into Arrow."""
