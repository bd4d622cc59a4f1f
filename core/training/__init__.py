"""Training loops: the teacher, supervised training and distillation, devices."""
