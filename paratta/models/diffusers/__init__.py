"""diffusers pipelines as paratta models: ``base`` (the shared adapter), ``sd`` and ``dit`` (one per
pipeline class), ``load`` (folder or hub id, dispatch by class) and ``tiny`` (random-weight
pipelines built offline from configs, for tests and benchmarks). Importing this package imports
nothing; diffusers is loaded by the modules themselves."""
