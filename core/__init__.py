"""The library: pure Python, no Django (the Ollama client, the gate, streaming, probes, stats)."""
