"""Ray Serve deployments for the student and the teacher, the web page and the load generator."""
