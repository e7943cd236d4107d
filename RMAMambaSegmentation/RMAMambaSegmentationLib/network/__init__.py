"""The RMA-Mamba network (T and S): scan operator, SS2D, VSS block, VMamba backbone, RMA decoder."""
