"""streamrec.models."""
