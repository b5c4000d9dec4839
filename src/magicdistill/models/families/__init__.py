"""Model families behind one interface: one module per diffusers pipeline family (Wan, HunyuanVideo)."""
