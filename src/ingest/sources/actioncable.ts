import { isRelayError } from '../../errors.js';
import { parseJsonText } from '../json.js';
import { assertClientChannel } from '../message.js';
import type { PubSubRoute } from './pubsub.js';
import { type Decoded, refuse } from './types.js';

// Rails' ActionCable with the Redis adapter, as it already publishes:
// `ActionCable.server.broadcast(stream, message)` PUBLISHes
// `coder.encode(message)` (ActiveSupport::JSON) on the channel
// `[channel_prefix, stream].compact.join(":")`
// (actioncable lib/action_cable/subscription_adapter/channel_prefix.rb, the
// same in 6.1 and current Rails). `broadcast_to(model, message)` is
// `broadcast(broadcasting_for(model), message)`, a stream such as
// `chat:Z2lkOi8vYXBwL1Jvb20vMQ` (the channel name and the model's GlobalID
// parameter), so it maps the same way.

/** Redis glob characters, escaped so the prefix is matched literally. */
export function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
}

/** A broadcast on `<prefix>:<stream>` is delivered as event `message` to the channel named `<stream>`. */
export function decodeActionCable(stream: string, text: string, maxJsonDepth: number): Decoded {
  try {
    assertClientChannel(stream);
  } catch (err) {
    if (isRelayError(err)) return refuse(err.code, `stream "${stream.slice(0, 200)}": ${err.message}`);
    throw err;
  }
  let data: unknown;
  try {
    data = parseJsonText(text, maxJsonDepth);
  } catch (err) {
    if (!isRelayError(err)) throw err;
    // `broadcast(..., coder: nil)` sends a string as it is.
    if (err.code !== 'invalid_json') return refuse(err.code, err.message);
    data = text;
  }
  return { kind: 'publish', body: { event: 'message', channels: [stream], data } };
}

export function actionCableRoute(channelPrefix: string, maxJsonDepth: number): PubSubRoute {
  const head = `${channelPrefix}:`;
  return {
    source: 'actioncable',
    // One Redis channel is one stream: its messages keep their order.
    ownBy: 'channel',
    pattern: `${escapeGlob(channelPrefix)}:*`,
    accepts: (channel) => channel.startsWith(head) && channel.length > head.length,
    decode: (channel, text) => [decodeActionCable(channel.slice(head.length), text, maxJsonDepth)],
  };
}
