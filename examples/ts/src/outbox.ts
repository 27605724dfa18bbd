/**
 * Reads the codes the local Cognito emulator "sent" (docs: "The local Cognito emulator", Outbox): in production the user reads the code
 * from their mailbox and types it into the journey's form.
 */
export class Outbox {
  private readonly url: string;

  constructor(
    base: string,
    destination: string,
    private readonly timeoutMs: number,
  ) {
    this.url = `${base}?destination=${encodeURIComponent(destination)}`;
  }

  async messages(): Promise<{ destination: string; code: string }[]> {
    const response = await fetch(this.url, { signal: AbortSignal.timeout(this.timeoutMs) });
    if (!response.ok) throw new Error(`outbox: HTTP ${response.status} from ${this.url}`);
    const body = (await response.json()) as { messages: { destination: string; code: string }[] };
    return body.messages;
  }

  /** Polls until a message newer than the first `seen` arrives, and returns its code. */
  async codeAfter(seen: number): Promise<string> {
    const deadline = Date.now() + this.timeoutMs;
    while (Date.now() < deadline) {
      const messages = await this.messages();
      const newest = messages.at(-1);
      if (messages.length > seen && newest) return newest.code;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error("outbox: no new code arrived before the deadline");
  }
}

/** A code of the same shape that is certainly not the right one. */
export function wrongCode(code: string): string {
  if (code === "") return "00000000";
  return code.slice(0, -1) + (code.endsWith("0") ? "1" : "0");
}
