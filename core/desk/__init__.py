"""The desk: spikes become trade proposals; the operator approves or rejects them."""
