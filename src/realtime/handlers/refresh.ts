import { RelayError } from '../../errors.js';
import type { RelaySocket } from '../events.js';
import type { Hub } from '../hub.js';
import type { TokenVerifier } from '../tokens.js';
import { type Handler, isObject } from './answer.js';
import { clientChannels } from './subscribe.js';

export interface RefreshDeps {
  readonly verify: TokenVerifier;
  readonly hub: Hub;
  readonly allowed: (socket: RelaySocket, channel: string) => boolean;
  readonly armExpiry: (socket: RelaySocket) => void;
}

/**
 * A fresh token for the same user extends the socket's life; channels the new
 * token no longer allows are left at once, except those an admin subscribed
 * the socket to (the token never had to allow them).
 */
export function refreshHandler(deps: RefreshDeps): Handler {
  return async (socket, request) => {
    if (!isObject(request)) throw new RelayError('bad_request', 'refresh takes { token }');
    const claims = await deps.verify(request.token);
    if (claims.user !== socket.data.user) {
      throw new RelayError('token_invalid', 'the new token is for a different user than this socket');
    }
    socket.data.exp = claims.exp;
    socket.data.patterns = claims.patterns;
    deps.armExpiry(socket);
    const server = socket.data.serverChannels;
    for (const c of clientChannels(socket)) {
      if (!server?.has(c) && !deps.allowed(socket, c)) deps.hub.detach(socket, c);
    }
    return { expiresAt: claims.exp };
  };
}
