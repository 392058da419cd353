"""diffusers pipelines as paratta models: ``base`` (what an adapter declares, the scheduler mapping, the
shared adapter), one module per pipeline family (``sd``, ``sdxl``, ``img2img``, ``dit``, ``sd3``, ``flux``,
``pixart``, ``sana``, ``wan``), ``adapters`` (the registry), ``load`` (folder or hub id), ``pipeline`` and
``batch`` (``ParaTAAPipeline``) and ``tiny`` (random-weight pipelines built offline from configs, for tests
and benchmarks). Importing this package imports nothing; diffusers is loaded by the modules themselves."""
