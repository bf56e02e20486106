"""The commands: one thin module per `segexp COMMAND`, each a Hydra task that takes the composed config,
calls the layer below that does the work and prints. segexp/__main__.py dispatches to them; no other
module imports a command."""
