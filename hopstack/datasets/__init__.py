"""Dataset loaders: the generic questions file here; MultiHop-RAG, HotpotQA/2Wiki and BEIR come later."""
