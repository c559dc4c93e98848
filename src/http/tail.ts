import { decodeJwt } from 'jose';
import { Type } from 'typebox';
import type { Config } from '../config/index.js';
import { RelayError } from '../errors.js';
import { assertClientChannel, assertUserId, BROADCAST_CHANNEL, USER_NAMESPACE } from '../ingest/message.js';
import { mintToken } from '../realtime/mint.js';
import { errorResponses } from './schemas.js';
import type { HttpApp } from './types.js';

/** Lifetime of a tail token; the console fetches a new one before it runs out. */
export const TAIL_TOKEN_SECONDS = 300;

/** The user id a tail socket connects as, so presence shows who is watching. */
export function tailUser(keyName: string): string {
  return `console@${keyName}`;
}

/**
 * Lets an admin key watch one channel the way a client would: the relay signs
 * a short-lived client token whose only channel is that one. Nothing new is
 * trusted: the token is an ordinary one, checked like any other at connect.
 * `$broadcast` needs no channel in the token: every socket receives it. A
 * user's own channel (`user:<id>`) goes in the token's `watch` claim: the
 * tail socket receives what the user receives without being the user, so
 * presence does not count the user online because an operator is watching.
 */
export function registerTailRoutes(app: HttpApp, config: Config): void {
  app.post(
    '/v1/channels/:channel/tail-token',
    {
      config: { scope: 'admin' },
      schema: {
        params: Type.Object({ channel: Type.String() }),
        response: {
          200: Type.Object({
            token: Type.String(),
            user: Type.String(),
            channel: Type.String(),
            expiresAt: Type.Integer({ description: 'seconds since the epoch' }),
          }),
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const { channel } = request.params;
      // Every socket is in the broadcast channel: its token needs no channel for it.
      const broadcast = channel === BROADCAST_CHANNEL;
      // A user's own channel is watched (the `watch` claim), never joined: the user is not counted online.
      const watch = channel.startsWith(`${USER_NAMESPACE}:`) ? channel : undefined;
      if (watch !== undefined) assertUserId(watch.slice(USER_NAMESPACE.length + 1));
      else if (!broadcast) assertClientChannel(channel);
      if (config.jwtSecret === undefined) {
        throw new RelayError(
          'not_found',
          'the live tail needs PUSHRELAY_JWT_SECRET: with a public key or a JWKS URL the relay cannot sign client tokens',
        );
      }
      const user = tailUser(request.publisher!.name);
      const token = await mintToken(config.jwtSecret, user, {
        channels: broadcast || watch !== undefined ? [] : [channel],
        ...(watch !== undefined ? { watch } : {}),
        ttlSeconds: TAIL_TOKEN_SECONDS,
        audience: config.jwtAudience,
        issuer: config.jwtIssuer,
      });
      return { token, user, channel, expiresAt: decodeJwt(token).exp! };
    },
  );
}
