"""streamrec: a streaming real-time recommender on Kafka, Faust, transformers and FAISS."""

__version__ = "0.1.0"
