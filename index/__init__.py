"""streamrec.index."""
