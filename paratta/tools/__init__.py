"""Tools on top of the library: the command line (sample, bench), the benchmark report, the
rank-scaling table, training of the embedded UNet, and the import-layout check."""
