import { isRelayError } from '../../errors.js';
import type { RedisNames } from '../../redis/keys.js';
import { parseJsonText } from '../json.js';
import { parsePublishBody } from '../schema.js';
import type { PubSubRoute } from './pubsub.js';
import { type Decoded, refuse } from './types.js';

/** A publish body as JSON text, checked as strictly as an HTTP body; malformed text is a refusal. */
export function decodePublish(text: string, maxJsonDepth: number): Decoded {
  try {
    return { kind: 'publish', body: parsePublishBody(parseJsonText(text, maxJsonDepth)) };
  } catch (err) {
    if (isRelayError(err)) return refuse(err.code, err.message);
    throw err;
  }
}

/**
 * `PUBLISH <prefix>:publish '<publish body>'`: the same JSON as
 * `POST /v1/publish`, handled by one live node (at most once, like pub/sub).
 */
export function rawPubSubRoute(names: RedisNames, maxJsonDepth: number): PubSubRoute {
  return {
    source: 'redis',
    channel: names.ingest,
    decode: (_channel, text) => [decodePublish(text, maxJsonDepth)],
  };
}
