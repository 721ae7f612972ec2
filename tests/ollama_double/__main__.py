"""Run the Ollama double in the foreground: `python -m tests.ollama_double --port 11434`."""

from __future__ import annotations

import argparse

from tests.ollama_double.server import OllamaDouble


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.ollama_double", description="A fake Ollama server."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds per token")
    parser.add_argument("--prompt-delay", type=float, default=0.0, help="seconds before 1st token")
    parser.add_argument("--load-duration", type=float, default=0.0, help="cold load, seconds")
    parser.add_argument("--reply", default=None, help="fixed reply text (default: an echo)")
    parser.add_argument("--num-parallel", type=int, default=1)
    parser.add_argument("--max-queue", type=int, default=512)
    args = parser.parse_args(argv)
    double = OllamaDouble(
        args.host,
        args.port,
        token_delay=args.token_delay,
        prompt_delay=args.prompt_delay,
        load_duration=args.load_duration,
        reply=args.reply,
        num_parallel=args.num_parallel,
        max_queue=args.max_queue,
    )
    double.start()
    print(f"Ollama double listening on {double.url} (Ctrl-C to stop)", flush=True)
    double.serve_forever()


if __name__ == "__main__":
    main()
