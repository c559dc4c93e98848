import { isRelayError } from '../../errors.js';
import { parseJsonText } from '../json.js';
import { assertClientChannel, assertEventName } from '../message.js';
import { escapeGlob } from './actioncable.js';
import type { PubSubRoute } from './pubsub.js';
import { type Decoded, refuse } from './types.js';

// Laravel's Redis broadcaster, as it already publishes
// (Illuminate/Broadcasting/Broadcasters/RedisBroadcaster.php, 8.x to 11.x):
//   broadcast($channels, $event, $payload) ->
//     $payload = json_encode(['event' => $event, 'data' => $payload,
//                             'socket' => Arr::pull($payload, 'socket')]);
//     EVAL "for i = 2, #ARGV do redis.call('publish', ARGV[i], ARGV[1]) end" 0 $payload <channels>
// where each channel is `$this->prefix.$channel` and `$this->prefix` is
// `database.redis.options.prefix` (the BroadcastManager passes it). Newer
// Laravel on a phpredis cluster PUBLISHes per channel instead, and phpredis
// adds the same prefix to the channel itself: either way the Redis channel is
// `<prefix><channel>`. `Arr::pull` works on a copy, so `data` still holds
// `socket` (the `X-Socket-ID` of the request, `toOthers()`), as
// laravel-echo-server delivers it.

/** One Laravel broadcast on `<prefix><channel>`: event `event` with `data` to channel `<channel>`, except socket `socket`. */
export function decodeLaravel(channel: string, text: string, maxJsonDepth: number): Decoded {
  try {
    assertClientChannel(channel);
  } catch (err) {
    if (isRelayError(err)) return refuse(err.code, `channel "${channel.slice(0, 200)}": ${err.message}`);
    throw err;
  }
  let value: unknown;
  try {
    value = parseJsonText(text, maxJsonDepth);
  } catch (err) {
    if (isRelayError(err)) return refuse(err.code, err.message);
    throw err;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return refuse('invalid_body', 'a Laravel broadcast must be a JSON object {event, data, socket}');
  }
  const o = value as Record<string, unknown>;
  try {
    assertEventName(o.event);
  } catch (err) {
    if (isRelayError(err)) return refuse(err.code, `event: ${err.message}`);
    throw err;
  }
  if (!('data' in o)) return refuse('invalid_body', 'a Laravel broadcast needs "data"');
  if (o.socket !== undefined && o.socket !== null && typeof o.socket !== 'string') {
    return refuse('invalid_body', '"socket" must be a socket id or null');
  }
  const socket = typeof o.socket === 'string' && o.socket !== '' ? o.socket : undefined;
  return {
    kind: 'publish',
    body: { event: o.event, channels: [channel], data: o.data },
    ...(socket !== undefined ? { options: { exceptSockets: [socket] } } : {}),
  };
}

export interface LaravelRouteOptions {
  /** The app's Redis prefix; '' when it has none. */
  readonly prefix: string;
  /** Channel name beginnings that are other traffic on the same Redis (the relay's own, ActionCable, AnyCable). */
  readonly others: readonly string[];
  readonly maxJsonDepth: number;
}

/**
 * PSUBSCRIBE `<prefix>*`. With a short or empty prefix the pattern also
 * matches the relay's own channels, the Socket.IO adapter's and the other
 * sources': `accepts` leaves those alone, unseen and uncounted.
 */
export function laravelRoute(options: LaravelRouteOptions): PubSubRoute {
  const { prefix, others, maxJsonDepth } = options;
  return {
    source: 'laravel',
    // One Redis channel is one stream: its messages keep their order.
    ownBy: 'channel',
    pattern: `${escapeGlob(prefix)}*`,
    accepts: (channel) =>
      channel.startsWith(prefix) &&
      channel.length > prefix.length &&
      !channel.startsWith('__keyspace@') &&
      !channel.startsWith('__keyevent@') &&
      !others.some((o) => channel === o || channel.startsWith(o)),
    decode: (channel, text) => [decodeLaravel(channel.slice(prefix.length), text, maxJsonDepth)],
  };
}
