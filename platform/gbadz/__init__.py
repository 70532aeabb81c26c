"""gbadz: the data-sharing platform of the Greater Bay Area special data zone."""

__version__ = "0.1.0"
