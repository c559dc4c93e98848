import { RelayError } from '../../errors.js';
import { assertClientChannel, type Position, userChannel } from '../../ingest/message.js';
import type { ChannelAnswer, RelaySocket, Since } from '../events.js';
import type { Hub } from '../hub.js';
import { channelList, type Handler, isObject } from './answer.js';

export interface SubscribeDeps {
  readonly hub: Hub;
  readonly maxChannels: number;
  readonly allowed: (socket: RelaySocket, channel: string) => boolean;
}

/** Channels a socket chose (its own id, its user channel and the broadcast channel are not counted). */
export function clientChannels(socket: RelaySocket): string[] {
  const own = userChannel(socket.data.user);
  // `$` rooms are the relay's own ($broadcast, the protocol rooms, the console's
  // $watch rooms): no client channel starts with `$`.
  return [...socket.rooms].filter((r) => r !== socket.id && r !== own && !r.startsWith('$'));
}

/** Parses a `since` map; anything malformed is the client's error. */
export function parseSince(value: unknown): Since {
  if (value === undefined || value === null) return {};
  if (!isObject(value)) throw new RelayError('bad_request', 'since must be { [channel]: { offset, epoch } }');
  const out: Since = Object.create(null);
  for (const [channel, pos] of Object.entries(value)) {
    if (
      !isObject(pos) ||
      typeof pos.offset !== 'number' ||
      !Number.isSafeInteger(pos.offset) ||
      pos.offset < 0 ||
      typeof pos.epoch !== 'string' ||
      pos.epoch.length > 64
    ) {
      throw new RelayError(
        'bad_request',
        `since["${channel}"] must be { offset: integer >= 0, epoch: string }`,
      );
    }
    out[channel] = { offset: pos.offset, epoch: pos.epoch } satisfies Position;
  }
  return out;
}

export function subscribeHandler(deps: SubscribeDeps): Handler {
  return async (socket, request) => {
    const channels = channelList(request, 'subscribe', deps.maxChannels);
    for (const c of channels) {
      assertClientChannel(c);
      if (!deps.allowed(socket, c))
        throw new RelayError('channel_not_allowed', `the token does not allow channel "${c}"`);
    }
    const since = parseSince((request as Record<string, unknown>).since);
    const current = clientChannels(socket);
    const adding = channels.filter((c) => !current.includes(c)).length;
    const joining = socket.data.joining ?? 0;
    if (current.length + joining + adding > deps.maxChannels) {
      throw new RelayError(
        'too_many_channels',
        `a socket may be subscribed to at most ${deps.maxChannels} channels`,
      );
    }
    socket.data.joining = joining + adding;
    try {
      const answers = await Promise.all(channels.map((c) => deps.hub.attach(socket, c, since[c])));
      // A getter, read as the acknowledgement is written: the room keeps
      // delivering until then, and the answer must not be older than any
      // message the socket already got.
      return {
        get channels() {
          const out: Record<string, ChannelAnswer> = {};
          channels.forEach((c, i) => {
            out[c] = deps.hub.answerNow(c, answers[i]!);
          });
          return out;
        },
      };
    } finally {
      socket.data.joining = (socket.data.joining ?? adding) - adding;
    }
  };
}
