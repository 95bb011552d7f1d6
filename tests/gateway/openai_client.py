"""The official openai SDK against the aligning gateway: a stream, a whole answer, a bad request.

Usage: openai_client.py BASE_URL QUERY  (prints one JSON line)
"""

import json
import sys

from openai import BadRequestError, OpenAI

base, query = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base, api_key="not-needed", max_retries=0, timeout=300)
messages = [{"role": "user", "content": query}]

streamed, chunks, finish = "", 0, None
for chunk in client.chat.completions.create(
    model="smollm2", messages=messages, temperature=0, max_tokens=200, stream=True
):
    for choice in chunk.choices:
        if choice.delta.content:
            streamed += choice.delta.content
            chunks += 1
        if choice.finish_reason:
            finish = choice.finish_reason

whole = client.chat.completions.create(
    model="smollm2", messages=messages, temperature=0, max_tokens=200
).choices[0].message.content

try:
    client.chat.completions.create(model="smollm2", messages=[])
    bad = "accepted"
except BadRequestError as e:
    bad = type(e).__name__

print(json.dumps({"streamed": streamed, "whole": whole, "chunks": chunks,
                  "finish_reason": finish, "bad_request": bad}))
