import { createHash, timingSafeEqual } from 'node:crypto';
import { Type } from 'typebox';
import { isRelayError, RelayError } from '../../errors.js';
import { errorResponses } from '../../http/schemas.js';
import type { HttpApp } from '../../http/types.js';
import { checkValue, parseJsonText } from '../json.js';
import { assertClientChannel } from '../message.js';
import type { PubSubRoute } from './pubsub.js';
import type { StreamPipelineSpec } from './stream.js';
import { type Decoded, refuse, type SourceContext } from './types.js';

// AnyCable's broadcast adapters, as anycable-rails / anycable-core send them
// (anycable-rb lib/anycable/broadcast_adapters/base.rb):
//   broadcast(stream, payload, meta) -> {stream, data: payload, meta}.compact.to_json
//   a batch                          -> [ {stream, data, meta}, ... ].to_json
//   broadcast_command(cmd, **p)      -> {command: cmd, payload: p}.to_json
// `data` is the message already encoded as JSON text (common.StreamMessage in
// anycable-go: Data string). The Redis adapter PUBLISHes it on
// `redis_channel` (`__anycable__`), redisx XADDs `payload` to the stream of
// that name, and the HTTP adapter POSTs it (application/json, `Authorization:
// Bearer <broadcast_key>`) and expects 201 Created.

function decodeItem(item: unknown, maxJsonDepth: number): Decoded[] {
  if (typeof item !== 'object' || item === null || Array.isArray(item)) {
    return [refuse('invalid_body', 'an AnyCable broadcast must be an object {stream, data}')];
  }
  const o = item as Record<string, unknown>;
  if ('command' in o) return [{ kind: 'ignore', reason: 'command' }];
  const stream = o.stream;
  try {
    assertClientChannel(stream);
  } catch (err) {
    if (isRelayError(err)) return [refuse(err.code, `stream: ${err.message}`)];
    throw err;
  }
  let data: unknown = o.data;
  if (typeof data === 'string') {
    try {
      data = parseJsonText(data, maxJsonDepth);
    } catch (err) {
      if (!isRelayError(err)) throw err;
      if (err.code !== 'invalid_json') return [refuse(err.code, err.message)];
      // Not JSON: delivered as the string it is.
    }
  }
  const out: Decoded[] = [];
  if (o.meta !== undefined) out.push({ kind: 'ignore', reason: 'meta' });
  out.push({ kind: 'publish', body: { event: 'message', channels: [stream], data } });
  return out;
}

/** One AnyCable broadcast message, or a batch (array) of them. */
export function decodeAnyCable(text: string, maxJsonDepth: number): Decoded[] {
  let value: unknown;
  try {
    value = parseJsonText(text, maxJsonDepth);
  } catch (err) {
    if (isRelayError(err)) return [refuse(err.code, err.message)];
    throw err;
  }
  return decodeValue(value, maxJsonDepth);
}

function decodeValue(value: unknown, maxJsonDepth: number): Decoded[] {
  const items = Array.isArray(value) ? value : [value];
  return items.flatMap((item) => decodeItem(item, maxJsonDepth));
}

export function anyCablePubSubRoute(channel: string, maxJsonDepth: number): PubSubRoute {
  return { source: 'anycable', channel, decode: (_c, text) => decodeAnyCable(text, maxJsonDepth) };
}

/** The redisx adapter: `XADD <channel> * payload <json>`, consumed like the publish stream, in its own group. */
export function anyCableStreamSpec(stream: string, maxJsonDepth: number): StreamPipelineSpec {
  return {
    name: 'anycable',
    source: 'anycable',
    stream,
    field: 'payload',
    decode: (text) => decodeAnyCable(text, maxJsonDepth),
    // Entry ids of two streams can be equal: keep AnyCable's apart from the publish stream's.
    idFor: (entry, index, count) => (count === 1 ? `anycable:${entry}` : `anycable:${entry}:${index}`),
  };
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * `POST /_broadcast` as anycable-go serves it for the HTTP adapter: the
 * broadcast (or batch) as the JSON body, `Authorization: Bearer <key>`,
 * answered 201 once every broadcast in it was handed to the publish path.
 * A batch with a malformed broadcast publishes nothing (400).
 */
export function registerAnyCableBroadcast(app: HttpApp, ctx: SourceContext, key: string): void {
  const expected = digest(`Bearer ${key}`);
  app.post(
    '/_broadcast',
    {
      schema: {
        body: Type.Unknown(),
        response: { 201: Type.Null(), ...errorResponses },
      },
    },
    async (request, reply) => {
      const header = request.headers.authorization;
      if (header === undefined)
        throw new RelayError('unauthorized', 'send Authorization: Bearer <PUSHRELAY_ANYCABLE_BROADCAST_KEY>');
      if (!timingSafeEqual(digest(header), expected)) throw new RelayError('invalid_key');
      checkValue(request.body, ctx.maxJsonDepth);
      const decoded = decodeValue(request.body, ctx.maxJsonDepth);
      const refused = decoded.find((d) => d.kind === 'refuse');
      if (refused && refused.kind === 'refuse') {
        ctx.metrics.ingestMalformed.inc({ source: 'anycable', code: refused.reason });
        ctx.metrics.ingestMessages.inc({ source: 'anycable', outcome: 'refused' });
        throw new RelayError('invalid_body', `nothing was published: ${refused.detail}`);
      }
      for (const d of decoded) {
        if (d.kind === 'ignore') {
          ctx.metrics.ingestIgnored.inc({ source: 'anycable', reason: d.reason });
          ctx.metrics.ingestMessages.inc({ source: 'anycable', outcome: 'ignored' });
        } else if (d.kind === 'publish') {
          await ctx.ingest.publish(d.body, 'anycable', { scope: 'anycable' });
          ctx.metrics.ingestMessages.inc({ source: 'anycable', outcome: 'published' });
        }
      }
      reply.code(201);
      return null;
    },
  );
}
