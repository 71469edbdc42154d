"""AblationGallery: gray baseline vs full-image net vs fusion net on the same eval images."""
