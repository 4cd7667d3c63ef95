"""Pure core: indicators, classifiers and scoring. No I/O, no wall clock, no globals."""
