"""The Ray workloads: the teacher's Train loop, the active-learning actor, the student trial."""
