import { SignJWT } from 'jose';

/** An HS256 client token, as a backend app would sign it; for development and the CLI. */
export async function mintToken(
  secret: string,
  user: string,
  opts: {
    channels?: string[];
    ttlSeconds?: number;
    audience?: string;
    issuer?: string;
    /** The `user_info` claim: what presence shows of the user. */
    userInfo?: Record<string, unknown>;
    /** The `watch` claim: a user's own channel (`user:<id>`) the socket receives without being that user. */
    watch?: string;
  } = {},
): Promise<string> {
  let jwt = new SignJWT({
    ...(opts.channels && opts.channels.length > 0 ? { channels: opts.channels } : {}),
    ...(opts.userInfo !== undefined ? { user_info: opts.userInfo } : {}),
    ...(opts.watch !== undefined ? { watch: opts.watch } : {}),
  })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(user)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + (opts.ttlSeconds ?? 3600));
  if (opts.audience) jwt = jwt.setAudience(opts.audience);
  if (opts.issuer) jwt = jwt.setIssuer(opts.issuer);
  return jwt.sign(new TextEncoder().encode(secret));
}
