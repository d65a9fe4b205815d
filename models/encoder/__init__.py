"""The sequence encoder: a SASRec-style transformer over each user's events, its training,
offline evaluation, item text vectors and cold start (imported on demand; importing the package
loads no torch).

Modules:
    network       SASRec-style causal transformer (transformers BertModel as a decoder)
    inputs        what the encoder reads from a UserState (types, gaps, summary, ...)
    windows       training/evaluation windows: the event log replayed into worker states
    event_log     a dataset as contract events (extra RecBole columns: type, value, context)
    behaviour_world  generated multi-behaviour dataset where each input carries signal
    ablations     `streamrec evaluate --ablations`: each input's gain over seeds
    evaluation    full-ranking HR/NDCG/MRR/coverage@k, popularity
    training      examples, full/sampled softmax losses, AdamW, early stopping
    checkpoint    safetensors checkpoint folders and the InferenceEncoder serving API
    item_text     the one text an item is embedded from (training and serving)
    text          all-MiniLM-L6-v2 item text vectors, cached
    coldstart     text -> item-space projection and its held-out-items evaluation
    quantize      dynamic int8 for CPU serving
    benchmark     `streamrec bench encoder`
    pipeline      what `streamrec train / evaluate / coldstart` run
    commands      CLI registration
"""
