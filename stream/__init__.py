"""streamrec.stream."""
