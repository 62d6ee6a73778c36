"""OpenAI's own Python client against `frugal serve`: a non-streamed and a streamed chat, a text
completion, prompt-lookup speculation (same greedy text, drafts accepted; sampled requests drafted
unless seeded), model listing, typed
errors (401, 400), and a clean exit on SIGTERM.
Usage: serve_openai_test.py FRUGAL_BINARY (exit 77: skipped)."""
import http.client
import json
import signal
import sys

from serve_support import Server, skip

try:
    import openai
except ImportError:
    skip("the 'openai' package is not importable (pip install openai)")


def main():
    server = Server(sys.argv[1], ["--api-key", "test-key"])
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="test-key", max_retries=0, timeout=120)
        models = client.models.list()
        model = models.data[0].id
        messages = [{"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": "What is the capital of France?"}]

        whole = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0, seed=1)
        text = whole.choices[0].message.content
        assert whole.object == "chat.completion", whole
        assert text, "empty answer"
        assert whole.choices[0].finish_reason in ("stop", "length"), whole.choices[0].finish_reason
        assert whole.usage.prompt_tokens > 10 and 0 < whole.usage.completion_tokens <= 24, whole.usage
        print("non-streamed:", repr(text))

        pieces, finish, usage = [], None, None
        for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0,
                                                    seed=1, stream=True, stream_options={"include_usage": True}):
            assert chunk.object == "chat.completion.chunk", chunk
            if chunk.usage:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                if choice.finish_reason:
                    finish = choice.finish_reason
        streamed = "".join(pieces)
        print("streamed:    ", repr(streamed), "in", len(pieces), "chunks")
        assert len(pieces) > 1, "the answer did not arrive in pieces"
        assert streamed == text, "greedy streamed answer differs from the whole one"
        assert finish == whole.choices[0].finish_reason, finish
        assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens, usage

        # Prompt-lookup speculation (frugal's "lookup" field) changes nothing in a greedy answer;
        # a copy-heavy prompt gets drafts accepted (/metrics).
        looked_up = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0,
                                                   seed=1, extra_body={"lookup": 8})
        assert looked_up.choices[0].message.content == text, looked_up.choices[0].message.content
        copy = [{"role": "user", "content": "Repeat exactly: the quick brown fox jumps over the lazy dog, "
                 "the quick brown fox jumps over the lazy dog, the quick brown fox jumps over the lazy dog."}]
        plain_copy = client.chat.completions.create(model=model, messages=copy, max_tokens=32, temperature=0)
        fast_copy = client.chat.completions.create(model=model, messages=copy, max_tokens=32, temperature=0,
                                                   extra_body={"lookup": 8})
        assert fast_copy.choices[0].message.content == plain_copy.choices[0].message.content
        host, port = server.url[len("http://"):].split(":")

        def draft_counter(name):
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            connection.request("GET", "/metrics", headers={"Authorization": "Bearer test-key"})
            metrics = connection.getresponse().read().decode()
            lines = [line for line in metrics.splitlines() if line.startswith(name + " ")]
            assert lines, name + " missing from /metrics:\n" + metrics
            return float(lines[0].split()[1])

        accepted = draft_counter("frugal_draft_tokens_accepted_total")
        assert accepted > 0, "no draft accepted"
        print("lookup:       frugal_draft_tokens_accepted_total", accepted)

        # Sampled requests speculate too (speculative sampling), unless they set a seed: then the
        # seed alone fixes the text, so the engine decodes them plainly.
        drafted = draft_counter("frugal_draft_tokens_total")
        seeded = client.chat.completions.create(model=model, messages=copy, max_tokens=32, temperature=0.7, seed=3,
                                                extra_body={"lookup": 8})
        assert seeded.choices[0].message.content, seeded
        assert draft_counter("frugal_draft_tokens_total") == drafted, "a seeded sampled request was speculated"
        for _ in range(3):  # a draw may wander off the quoted text; three in a row would not
            sampled = client.chat.completions.create(model=model, messages=copy, max_tokens=32, temperature=0.7,
                                                     extra_body={"lookup": 8})
            assert sampled.choices[0].message.content and sampled.usage.completion_tokens > 0, sampled
            if draft_counter("frugal_draft_tokens_total") > drafted:
                break
        assert draft_counter("frugal_draft_tokens_total") > drafted, "unseeded sampled requests drafted nothing"
        print("sampled lookup:", repr(sampled.choices[0].message.content[:60]))

        completion = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
        assert completion.choices[0].text, completion
        assert completion.usage.completion_tokens > 0

        try:
            client.chat.completions.create(model=model, messages=messages, n=2)
            raise AssertionError("n=2 was accepted")
        except openai.BadRequestError as e:
            assert e.status_code == 400
        try:
            openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
            raise AssertionError("a wrong key was accepted")
        except openai.AuthenticationError as e:
            assert e.status_code == 401
        drained = sigterm_mid_stream(server)
    finally:
        code = server.stop()
    assert code == 0, "frugal serve exited with %d after SIGTERM:\n%s" % (code, "".join(server.log))
    assert drained.endswith("data: [DONE]\n\n"), "the running stream was cut by SIGTERM: %r" % drained[-200:]
    print("ok")


def sigterm_mid_stream(server):
    """Sends SIGTERM while an answer streams; returns the whole SSE body the client received."""
    host, port = server.url[len("http://"):].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 48, "ignore_eos": True, "stream": True})
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json", "Authorization": "Bearer test-key"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.status
    received = resp.readline() + resp.readline()  # the first event
    server.proc.send_signal(signal.SIGTERM)
    received += resp.read()
    return received.decode("utf-8", "replace")


if __name__ == "__main__":
    main()
