"""Our from-scratch decoder Transformer (the book's model, Llama-compatible) and its engine."""
