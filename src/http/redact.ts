/**
 * Keeps secrets out of messages. Every secret the run knows (bearer token,
 * step-up secret, each minted token) is registered here, and any text meant
 * for a human (errors, warnings, page labels, reports) goes through
 * `text()`. URLs additionally lose the values of query parameters whose
 * names say they carry a credential (signed download URLs, `access_token`).
 */
const SECRET_PARAM = /token|secret|signature|sig$|key|password|credential|auth/i;
const MASK = '***';

export class Redactor {
  private readonly secrets = new Set<string>();

  /** Registers a secret; short strings are ignored (they would mask ordinary words). */
  add(secret: string | undefined): void {
    if (secret && secret.length >= 6) this.secrets.add(secret);
  }

  text(text: string): string {
    for (const secret of this.secrets) if (text.includes(secret)) text = text.split(secret).join(MASK);
    return text;
  }

  /** A URL fit for messages: credential-like query values masked, userinfo dropped. */
  url(url: string | URL): string {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return this.text(String(url));
    }
    parsed.username = '';
    parsed.password = '';
    // Re-serialising the query re-encodes it, so only touch it when something must be masked.
    const secretNames = [...parsed.searchParams.keys()].filter((name) => SECRET_PARAM.test(name));
    for (const name of secretNames) parsed.searchParams.set(name, MASK);
    return this.text(parsed.toString());
  }
}

