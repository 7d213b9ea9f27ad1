"""Says it has nothing to do and exits 0 before it takes a frame."""

print("quitter: nothing to do", flush=True)
