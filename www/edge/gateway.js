// The aligning gateway as a fetch handler, for edge runtimes (Deno, workerd): the same
// OpenAI-compatible endpoint as `stream-aligner serve --upstream`, on the CPU-only wasm build.
// The upstream is reached with the runtime's fetch (from inside the wasm); each corrected
// sentence is one chat.completion.chunk.
//
//   const gw = createGateway({ Session, Cancel, load, upstream: { baseUrl, model, apiKey } });
//   export default { fetch: (request, env) => gw.fetch(request) };
//
// `load()` resolves to { base, adapter } (the GGUF's and the adapter's bytes); it is called
// once, on the first request that needs the models.

const LIMITS = { maxBodyBytes: 1 << 20, maxMessages: 256, maxChars: 200000 };

function error(status, type, code, message, headers = {}) {
  return new Response(JSON.stringify({ error: { message, type, code, param: null } }), {
    status,
    headers: { 'content-type': 'application/json', ...headers },
  });
}

const invalid = (message) => error(400, 'invalid_request_error', 'invalid_request', message);

function text(content) {
  if (typeof content === 'string') return content;
  if (content == null) return '';
  if (Array.isArray(content)) {
    return content.map((p) => {
      if (p?.type !== 'text') throw new Error(`content parts of type '${p?.type}' are not supported`);
      return p.text ?? '';
    }).join('');
  }
  throw new Error('a message content is neither text nor parts');
}

/** The request made ready to run, or an error Response. */
async function job(request, chat) {
  const declared = Number(request.headers.get('content-length') ?? 0);
  if (declared > LIMITS.maxBodyBytes) {
    return error(413, 'invalid_request_error', 'request_too_large', `the body is over ${LIMITS.maxBodyBytes} bytes`);
  }
  const raw = await request.text();
  if (raw.length > LIMITS.maxBodyBytes) {
    return error(413, 'invalid_request_error', 'request_too_large', `the body is over ${LIMITS.maxBodyBytes} bytes`);
  }
  let req;
  try {
    req = JSON.parse(raw);
  } catch (e) {
    return invalid(`the request body is not valid JSON: ${e.message}`);
  }
  if (typeof req !== 'object' || req === null || Array.isArray(req)) return invalid('the request body must be a JSON object');
  if (req.n != null && req.n !== 1) return invalid('only n = 1 is supported');
  let context = [];
  let query;
  try {
    if (chat) {
      if (!Array.isArray(req.messages)) return invalid("'messages' must be an array");
      if (req.messages.length === 0) return invalid("'messages' is empty");
      if (req.messages.length > LIMITS.maxMessages) return invalid(`at most ${LIMITS.maxMessages} messages are accepted`);
      const all = req.messages.map((m) => ({ role: m?.role === 'developer' ? 'system' : m?.role, content: text(m?.content) }));
      const bad = all.find((m) => !['system', 'user', 'assistant'].includes(m.role));
      if (bad) return invalid(`unsupported message role '${bad.role}'`);
      const last = all.pop();
      if (last.role !== 'user') return invalid("the last message must be the user's");
      context = all;
      query = last.content;
    } else {
      const p = Array.isArray(req.prompt) && req.prompt.length === 1 ? req.prompt[0] : req.prompt;
      if (typeof p !== 'string') return invalid("'prompt' must be one string");
      query = p;
    }
  } catch (e) {
    return invalid(e.message);
  }
  if (!query.trim()) return invalid('the query (the last user message) is empty');
  const chars = context.reduce((n, m) => n + m.content.length, 0) + query.length;
  if (chars > LIMITS.maxChars) {
    return error(400, 'invalid_request_error', 'context_length_exceeded', `the conversation has ${chars} characters; at most ${LIMITS.maxChars} are accepted`);
  }
  const maxTokens = req.max_completion_tokens ?? req.max_tokens ?? 1024;
  if (!Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > 1000000) return invalid('max_tokens must be an integer from 1 to 1000000');
  return { context, query, stream: req.stream === true, details: req.stream_aligner?.details === true, maxTokens, model: req.model };
}

export function createGateway({ Session, Cancel, load, upstream, apiKeys = [], maxActive = 4, modelName, resample = 0 }) {
  let session = null;
  let loading = null;
  let active = 0;
  let serial = 0;
  const name = modelName ?? upstream.model ?? 'default';

  async function models() {
    if (session) return session;
    loading ??= (async () => {
      const { base, adapter } = await load();
      session = await Session.create(base, adapter, false);
      return session;
    })();
    try {
      return await loading;
    } catch (e) {
      loading = null;
      throw e;
    }
  }

  function authorized(request) {
    if (apiKeys.length === 0) return true;
    const given = (request.headers.get('authorization') ?? '').replace(/^Bearer /, '').trim();
    return apiKeys.includes(given);
  }

  const scrub = (message) => (upstream.apiKey ? String(message).split(upstream.apiKey).join('<redacted>') : String(message));

  async function answer(request, chat) {
    if (!authorized(request)) {
      return error(401, 'invalid_request_error', 'invalid_api_key', 'a valid gateway key is required (Authorization: Bearer KEY)');
    }
    const j = await job(request, chat);
    if (j instanceof Response) return j;
    if (active >= maxActive) {
      return error(429, 'rate_limit_error', 'server_busy', `${maxActive} answers are being aligned; try again shortly`, { 'retry-after': '1' });
    }
    active += 1;
    let released = false;
    const release = () => {
      if (!released) {
        released = true;
        active -= 1;
      }
    };
    let s;
    try {
      s = await models();
    } catch (e) {
      release();
      return error(500, 'server_error', 'server_error', `loading the aligner failed: ${e.message ?? e}`);
    }
    const created = Math.floor(Date.now() / 1000);
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-${created}-${serial++}`;
    const chunk = (content, first, finish) => ({
      id,
      object: chat ? 'chat.completion.chunk' : 'text_completion',
      created,
      model: name,
      choices: [chat
        ? { index: 0, delta: { ...(first ? { role: 'assistant' } : {}), ...(content != null ? { content } : {}) }, logprobs: null, finish_reason: finish }
        : { index: 0, text: content ?? '', logprobs: null, finish_reason: finish }],
    });
    const options = {
      mode: 'stream',
      maxSentences: 32,
      maxTokens: j.maxTokens,
      calculator: true,
      // A step whose correction does not hold up is drawn again, sampled (one request each).
      resample,
      remote: { baseUrl: upstream.baseUrl, model: upstream.model, apiKey: upstream.apiKey, api: 'chat', timeoutMs: upstream.timeoutMs ?? 60000, context: j.context },
    };
    const cancel = new Cancel();
    const detail = (ev) => ({
      index: ev.index, original: ev.original, corrected: ev.corrected, changed: ev.changed,
      aligned: ev.aligned, upstream_ms: ev.upstream_ms, aligner_ms: ev.aligner_ms,
      upstream_tokens: ev.upstream_tokens, aligner_tokens: ev.aligner_tokens,
    });
    const usage = (answerJson, events) => {
      const upstreamTokens = events.reduce((n, e) => n + e.upstream_tokens, 0);
      const alignerTokens = events.reduce((n, e) => n + e.aligner_tokens, 0);
      const prompt = answerJson.prompt_tokens ?? 0;
      return { prompt_tokens: prompt, completion_tokens: alignerTokens, total_tokens: prompt + alignerTokens, upstream_tokens: upstreamTokens, aligner_tokens: alignerTokens, upstream_requests: answerJson.upstream_requests ?? 0 };
    };
    const finishOf = (events) => (events.reduce((n, e) => n + e.upstream_tokens, 0) >= j.maxTokens ? 'length' : 'stop');

    if (!j.stream) {
      const events = [];
      try {
        const a = JSON.parse(await s.run(j.query, JSON.stringify(options), (e) => events.push(JSON.parse(e)), cancel));
        const content = a.text;
        const body = {
          id, object: chat ? 'chat.completion' : 'text_completion', created, model: name,
          choices: [chat ? { index: 0, message: { role: 'assistant', content }, logprobs: null, finish_reason: finishOf(events) } : { index: 0, text: content, logprobs: null, finish_reason: finishOf(events) }],
          usage: usage(a, events),
          ...(j.details ? { stream_aligner: { sentences: events.map(detail) } } : {}),
        };
        return new Response(JSON.stringify(body), { headers: { 'content-type': 'application/json' } });
      } catch (e) {
        const m = scrub(e.message ?? e);
        const timeout = /timed out/.test(m);
        return error(timeout ? 504 : 502, 'upstream_error', timeout ? 'upstream_timeout' : 'upstream_error', m);
      } finally {
        release();
      }
    }

    const enc = new TextEncoder();
    let controller;
    let closed = false;
    const send = (obj) => {
      if (!closed) controller.enqueue(enc.encode(`data: ${typeof obj === 'string' ? obj : JSON.stringify(obj)}\n\n`));
    };
    const body = new ReadableStream({
      start(c) {
        controller = c;
        const events = [];
        let first = true;
        // run() throws at once on options it refuses; the promise carries the rest.
        const run = (...args) => {
          try {
            return s.run(...args);
          } catch (e) {
            return Promise.reject(e);
          }
        };
        run(j.query, JSON.stringify(options), (e) => {
          const ev = JSON.parse(e);
          events.push(ev);
          const c = chunk(ev.corrected, first, null);
          if (j.details) c.stream_aligner = detail(ev);
          first = false;
          send(c);
        }, cancel).then((a) => {
          const last = chunk(null, first, finishOf(events));
          last.usage = usage(JSON.parse(a), events);
          send(last);
        }, (e) => {
          const m = scrub(e.message ?? e);
          if (!closed) send({ error: { message: m, type: 'upstream_error', code: /timed out/.test(m) ? 'upstream_timeout' : 'upstream_error' } });
        }).finally(() => {
          send('[DONE]');
          release();
          if (!closed) {
            closed = true;
            controller.close();
          }
        });
      },
      // The client left: stop the answer (the upstream request is dropped at the next token).
      cancel() {
        closed = true;
        cancel.cancel();
      },
    });
    return new Response(body, { headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' } });
  }

  return {
    async fetch(request) {
      const url = new URL(request.url);
      if (request.method === 'GET' && url.pathname === '/health') {
        return new Response(JSON.stringify({ status: 'ok', active, max_active: maxActive, loaded: session !== null }), { headers: { 'content-type': 'application/json' } });
      }
      if (request.method === 'GET' && url.pathname === '/v1/models') {
        return new Response(JSON.stringify({ object: 'list', data: [{ id: name, object: 'model', owned_by: 'stream-aligner' }] }), { headers: { 'content-type': 'application/json' } });
      }
      if (request.method === 'POST' && url.pathname === '/v1/chat/completions') return answer(request, true);
      if (request.method === 'POST' && url.pathname === '/v1/completions') return answer(request, false);
      return error(404, 'invalid_request_error', 'not_found', `no route for ${request.method} ${url.pathname}`);
    },
  };
}
