"""diffusers pipelines as paratta models: ``base`` (the shared adapter), ``sd``, ``dit``, ``sd3`` and
``flux`` (one per pipeline class), ``load`` (folder or hub id, dispatch by class), ``pipeline``
(``ParaTAAPipeline``: a pipeline object sampled by ParaTAA, its own arguments) and ``tiny``
(random-weight pipelines built offline from configs, for tests and benchmarks). Importing this
package imports nothing; diffusers is loaded by the modules that need it (``pipeline`` only when a
pipeline is wrapped)."""
