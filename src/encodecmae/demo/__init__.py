"""The embedded demo: a synthesiser of the pretraining corpus and of HEAR-like tasks."""
