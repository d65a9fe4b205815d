"""streamrec.models: sequence encoder, its training and evaluation, cold start, policy.

Modules (imported on demand; importing the package loads no torch):
    encoder       SASRec-style causal transformer (transformers BertModel as a decoder)
    evaluation    leave-one-out split, full-ranking HR/NDCG/MRR/coverage@k, popularity
    training      examples, full/sampled softmax losses, AdamW, early stopping
    checkpoint    safetensors checkpoint folders and the InferenceEncoder serving API
    text_encoder  all-MiniLM-L6-v2 item text vectors, cached
    coldstart     text -> item-space projection and its held-out-items evaluation
    quantize      dynamic int8 for CPU serving
    benchmark     `streamrec bench encoder`
    pipeline      what `streamrec train / evaluate / coldstart` run
    commands      CLI registration
"""
