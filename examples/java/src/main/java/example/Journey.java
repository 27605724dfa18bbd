package example;

import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.ListValue;
import com.google.protobuf.Struct;
import com.google.protobuf.Value;
import com.google.protobuf.util.JsonFormat;
import com.stepexecutor.v1.FailureBehavior;
import com.stepexecutor.v1.FailureCode;
import com.stepexecutor.v1.GenerateOtpRequest;
import com.stepexecutor.v1.GenerateOtpResponse;
import com.stepexecutor.v1.JourneyContext;
import com.stepexecutor.v1.OtpChannel;
import com.stepexecutor.v1.StepConfiguration;
import com.stepexecutor.v1.StepExecutorGrpc;
import com.stepexecutor.v1.StepFailure;
import com.stepexecutor.v1.ValidateOtpRequest;
import com.stepexecutor.v1.ValidateOtpResponse;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.MetadataUtils;
import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * An orchestrator running one "Cognito OTP" journey against the step service: Generate, the code the user
 * typed (read here from the local emulator's outbox), a wrong code taking the failure branch and looping back
 * to the code form, then the right code, with the step variables assigned from the responses.
 *
 * <pre>
 *   mvn -B package && java -cp 'target/classes:target/lib/*' example.Journey --target 127.0.0.1:50051
 * </pre>
 *
 * <p>Every flag has an environment variable (OTP_STEP_TARGET, OTP_STEP_OUTBOX_URL, OTP_STEP_IDENTIFIER,
 * OTP_STEP_CONNECTION, OTP_STEP_TIMEOUT_MS, OTP_STEP_KEEPALIVE_MS). Against a fleet, the target is a name that
 * resolves to every instance: {@code dns:///otp-steps.default.svc.cluster.local:50051} (a headless Service). It
 * prints one line per step and exits 1 on anything a real journey
 * would not expect here (a gRPC error, an abort, a wrong code accepted, the right one refused).
 */
public final class Journey {
  private static final String JOURNEY_ID = "jit-migration";
  private static final String OUTPUT_VARIABLE = "otp_result";
  private static final String ERROR_VARIABLE = "otp_error";
  // Generate is retried here on a deadline: with the same step_execution_id a retry answers with the first
  // result instead of sending a second code (docs: "The contract"). UNAVAILABLE is retried by grpc-java
  // itself, from the service config (channel()). Nothing else is retried blindly.
  private static final int GENERATE_ATTEMPTS = 3;
  private static final SecureRandom RANDOM = new SecureRandom();

  /** Ends the journey: something a real journey would not expect here. */
  static final class JourneyFailed extends Exception {
    JourneyFailed(String message) {
      super(message);
    }
  }

  private final Map<String, String> config;
  private final long timeoutMs;
  private final String traceId = randomHex(16);
  private final Map<String, Struct> vars = new HashMap<>(); // the journey's variables
  private final HttpClient http = HttpClient.newHttpClient();

  private Journey(Map<String, String> config) {
    this.config = config;
    this.timeoutMs = Long.parseLong(config.get("timeout-ms"));
  }

  public static void main(String[] args) {
    try {
      new Journey(config(args)).run();
    } catch (JourneyFailed | RuntimeException | IOException | InterruptedException e) {
      System.err.println("journey: FAILED: " + e.getMessage());
      System.exit(1);
    }
  }

  private void run() throws JourneyFailed, IOException, InterruptedException {
    ManagedChannel channel = channel();
    try {
      runOn(StepExecutorGrpc.newBlockingStub(channel));
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  /**
   * The channel, with the gRPC service config the Python client ships (service_config.json, kept identical to
   * every other copy by the repository's tests): round_robin over every address the target resolves to (a
   * dns:/// name of a headless Service), waitForReady, and retries on UNAVAILABLE for the methods safe to
   * repeat: GenerateOtp (idempotent per journey run and step execution: a repeat answers with the code already
   * sent, never sends a second) and CheckConnection (it only reads). ValidateOtp is not retried: a Validate
   * whose instance went away after Cognito judged the code may have spent an attempt, and a blind repeat would
   * spend another. Keepalive pings every 30 s, on an idle connection too: the service accepts one every 20 s
   * (more is answered with GOAWAY too_many_pings); grpc-java sends none more often than every 10 s.
   */
  private ManagedChannel channel() throws IOException {
    // Plaintext on loopback for the local demo; use useTransportSecurity() for a deployed service.
    return ManagedChannelBuilder.forTarget(config.get("target"))
        .usePlaintext()
        .defaultServiceConfig(serviceConfig())
        .enableRetry()
        .keepAliveTime(Long.parseLong(config.get("keepalive-ms")), TimeUnit.MILLISECONDS)
        .keepAliveTimeout(10, TimeUnit.SECONDS)
        .keepAliveWithoutCalls(true)
        .build();
  }

  /** service_config.json as the plain maps, lists, strings, doubles and booleans grpc-java takes. */
  private static Map<String, ?> serviceConfig() throws IOException {
    try (InputStream json = Journey.class.getResourceAsStream("/service_config.json")) {
      if (json == null) {
        throw new IOException("service_config.json is not on the class path");
      }
      Struct.Builder config = Struct.newBuilder();
      JsonFormat.parser().merge(new String(json.readAllBytes(), StandardCharsets.UTF_8), config);
      return plain(config.build());
    }
  }

  private static Map<String, Object> plain(Struct struct) {
    Map<String, Object> map = new LinkedHashMap<>();
    struct.getFieldsMap().forEach((name, value) -> map.put(name, plain(value)));
    return map;
  }

  private static Object plain(Value value) {
    return switch (value.getKindCase()) {
      case STRUCT_VALUE -> plain(value.getStructValue());
      case LIST_VALUE -> plain(value.getListValue());
      case NUMBER_VALUE -> value.getNumberValue(); // a Double, as grpc-java's own JSON parser gives
      case STRING_VALUE -> value.getStringValue();
      case BOOL_VALUE -> value.getBoolValue();
      default -> null;
    };
  }

  private static List<Object> plain(ListValue list) {
    List<Object> items = new ArrayList<>();
    list.getValuesList().forEach(item -> items.add(plain(item)));
    return items;
  }

  private void runOn(StepExecutorGrpc.StepExecutorBlockingStub steps)
      throws JourneyFailed, IOException, InterruptedException {
    String runId = "run-" + randomHex(8);
    String identifier = config.get("identifier");
    System.out.printf("journey: run=%s trace_id=%s identifier=%s%n", runId, traceId, identifier);

    StepConfiguration step =
        StepConfiguration.newBuilder()
            .setConnection(config.get("connection"))
            .setUserIdentifier(identifier)
            .setOtpChannel(OtpChannel.OTP_CHANNEL_EMAIL)
            .addAllScopes(List.of("openid", "profile", "email"))
            .setOutputVariable(OUTPUT_VARIABLE)
            .setErrorOutputVariable(ERROR_VARIABLE)
            .setFailureBehavior(FailureBehavior.FAILURE_BEHAVIOR_FAILURE_BRANCH)
            .build();

    // --- Step "send-code": Cognito OTP Generate.
    int seen = outboxCodes().size();
    GenerateOtpRequest generate =
        GenerateOtpRequest.newBuilder()
            .setJourney(
                JourneyContext.newBuilder()
                    .setJourneyId(JOURNEY_ID)
                    .setJourneyRunId(runId)
                    .setStepId("send-code")
                    // One execution of the step, reused by its retries.
                    .setStepExecutionId(runId + "/send-code/1"))
            .setStep(step)
            .build();
    GenerateOtpResponse sent = null;
    for (int attempt = 1; sent == null; attempt++) {
      try {
        sent = call(steps).generateOtp(generate);
      } catch (StatusRuntimeException e) {
        if (e.getStatus().getCode() == Status.Code.DEADLINE_EXCEEDED && attempt < GENERATE_ATTEMPTS) {
          System.out.printf(
              "generate: deadline exceeded, retrying with the same step_execution_id (attempt %d)%n",
              attempt + 1);
          continue;
        }
        throw new JourneyFailed("generate could not run: " + describe(e));
      }
    }
    vars.putAll(sent.getVariablesMap());
    switch (sent.getOutcomeCase()) {
      case SUCCESS ->
          System.out.printf(
              "generate: success medium=%s destination=%s max_attempts=%d%n",
              sent.getSuccess().getDeliveryMedium(),
              sent.getSuccess().getMaskedDestination(),
              sent.getSuccess().getMaxAttempts());
      // The failure branch: a real journey would show "could not send a code" or retry later.
      case FAILURE ->
          throw new JourneyFailed("generate took the failure branch: " + failureLine(sent.getFailure()));
      case ABORT ->
          throw new JourneyFailed(
              "generate aborted the journey: client_error=" + sent.getAbort().getClientError().getCode());
      default -> throw new JourneyFailed("generate answered without an outcome");
    }

    // --- Form step: the user types the code. Here: from the emulator's outbox, with a wrong one first.
    String code = codeAfter(seen);
    List<String> typed = List.of(wrongCode(code), code);

    // --- Step "check-code": Cognito OTP Validate, looping back to the form on the failure branch.
    for (int i = 0; i < typed.size(); i++) {
      String otp = typed.get(i);
      ValidateOtpRequest validate =
          ValidateOtpRequest.newBuilder()
              .setJourney(
                  JourneyContext.newBuilder()
                      .setJourneyId(JOURNEY_ID)
                      .setJourneyRunId(runId) // the run Generate ran in: the challenge is kept under it
                      .setStepId("check-code")
                      .setStepExecutionId(runId + "/check-code/" + (i + 1)))
              .setStep(step)
              .setOtpCode(otp)
              .build();
      ValidateOtpResponse checked;
      try {
        checked = call(steps).validateOtp(validate);
      } catch (StatusRuntimeException e) {
        // Not retried, neither here nor by grpc-java (the service config gives ValidateOtp no retryPolicy): a
        // Validate that timed out or lost its instance may already have been judged and spent an attempt.
        throw new JourneyFailed("validate could not run: " + describe(e));
      }
      vars.putAll(checked.getVariablesMap());
      switch (checked.getOutcomeCase()) {
        case SUCCESS -> {
          if (!otp.equals(code)) {
            throw new JourneyFailed("validate accepted a wrong code");
          }
          var s = checked.getSuccess();
          Value email = s.getClaims().getFieldsOrDefault("email", Value.getDefaultInstance());
          System.out.printf(
              "validate: success sub=%s username=%s email=%s verified=%s%n",
              s.getSub(), s.getUsername(), email.getStringValue(), s.getVerifiedMedium());
          Struct result = vars.get(OUTPUT_VARIABLE);
          if (result == null || !s.getSub().equals(result.getFieldsOrThrow("sub").getStringValue())) {
            throw new JourneyFailed("variable " + OUTPUT_VARIABLE + " does not carry the sub");
          }
          System.out.printf("variable %s: %s%n", OUTPUT_VARIABLE, json(result));
          System.out.println("journey: completed");
          return;
        }
        case FAILURE -> {
          StepFailure f = checked.getFailure();
          System.out.println("validate: failure " + failureLine(f));
          System.out.printf("variable %s: %s%n", ERROR_VARIABLE, json(vars.get(ERROR_VARIABLE)));
          if (f.getCode() == FailureCode.FAILURE_CODE_INVALID_CODE && f.getAttemptsRemaining() > 0) {
            System.out.printf(
                "journey: failure branch -> back to the code form (%d attempts left)%n",
                f.getAttemptsRemaining());
            continue;
          }
          switch (f.getCode()) {
            case FAILURE_CODE_ATTEMPTS_EXHAUSTED,
                FAILURE_CODE_CHALLENGE_EXPIRED,
                FAILURE_CODE_CHALLENGE_NOT_FOUND ->
                throw new JourneyFailed(
                    "the challenge is gone (" + f.getCode() + "): the journey would run Generate again");
            default -> {
              if (f.getRetryable()) {
                throw new JourneyFailed(
                    "a retryable failure (" + f.getCode() + "): the journey would retry after a backoff");
              }
              throw new JourneyFailed("the failure branch ends the journey here (" + f.getCode() + ")");
            }
          }
        }
        case ABORT ->
            throw new JourneyFailed(
                "validate aborted the journey: client_error=" + checked.getAbort().getClientError().getCode());
        default -> throw new JourneyFailed("validate answered without an outcome");
      }
    }
    throw new JourneyFailed("the right code was never accepted");
  }

  /**
   * The stub for one step call: its deadline, and a W3C traceparent with the journey's trace id and a fresh
   * parent id, so the whole journey is one trace. With OpenTelemetry in your engine, use its gRPC
   * instrumentation instead.
   */
  private StepExecutorGrpc.StepExecutorBlockingStub call(StepExecutorGrpc.StepExecutorBlockingStub steps) {
    Metadata headers = new Metadata();
    headers.put(
        Metadata.Key.of("traceparent", Metadata.ASCII_STRING_MARSHALLER),
        "00-" + traceId + "-" + randomHex(8) + "-01"); // version 00, sampled
    return steps
        .withDeadlineAfter(timeoutMs, TimeUnit.MILLISECONDS)
        .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers));
  }

  private static String failureLine(StepFailure f) {
    StringBuilder line =
        new StringBuilder(
            String.format(
                "code=%s category=%s retryable=%b", f.getCode(), f.getCategory(), f.getRetryable()));
    // Optional in the contract: present only for INVALID_CODE / RESEND_TOO_SOON.
    if (f.hasAttemptsRemaining()) {
      line.append(" attempts_remaining=").append(f.getAttemptsRemaining());
    }
    if (f.hasRetryAfterSeconds()) {
      line.append(" retry_after_seconds=").append(f.getRetryAfterSeconds());
    }
    return line.toString();
  }

  private static String describe(StatusRuntimeException e) {
    return e.getStatus().getCode() + ": " + e.getStatus().getDescription();
  }

  private static String json(Struct value) throws InvalidProtocolBufferException {
    return value == null ? "null" : JsonFormat.printer().omittingInsignificantWhitespace().print(value);
  }

  // --- The emulator's outbox (docs: "The local Cognito emulator", Outbox): in production the user reads the code from their mailbox.

  private List<Value> outboxCodes() throws IOException, InterruptedException, JourneyFailed {
    String url =
        config.get("outbox")
            + "?destination="
            + URLEncoder.encode(config.get("identifier"), StandardCharsets.UTF_8);
    HttpRequest request =
        HttpRequest.newBuilder(URI.create(url)).timeout(Duration.ofMillis(timeoutMs)).GET().build();
    HttpResponse<String> response = http.send(request, HttpResponse.BodyHandlers.ofString());
    if (response.statusCode() != 200) {
      throw new JourneyFailed("outbox: HTTP " + response.statusCode() + " from " + url);
    }
    Struct.Builder body = Struct.newBuilder();
    JsonFormat.parser().merge(response.body(), body);
    return body.getFieldsOrThrow("messages").getListValue().getValuesList();
  }

  /** Polls until a message newer than the first {@code seen} arrives, and returns its code. */
  private String codeAfter(int seen) throws IOException, InterruptedException, JourneyFailed {
    long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
    while (System.nanoTime() < deadline) {
      List<Value> messages = outboxCodes();
      if (messages.size() > seen) {
        return messages.get(messages.size() - 1).getStructValue().getFieldsOrThrow("code").getStringValue();
      }
      Thread.sleep(50);
    }
    throw new JourneyFailed("outbox: no new code arrived before the deadline");
  }

  /** A code of the same shape that is certainly not the right one. */
  private static String wrongCode(String code) {
    if (code.isEmpty()) {
      return "00000000";
    }
    return code.substring(0, code.length() - 1) + (code.endsWith("0") ? "1" : "0");
  }

  private static String randomHex(int bytes) {
    byte[] buffer = new byte[bytes];
    RANDOM.nextBytes(buffer);
    return HexFormat.of().formatHex(buffer);
  }

  /** Flags ({@code --name value} or {@code --name=value}) over environment variables over defaults. */
  private static Map<String, String> config(String[] args) throws JourneyFailed {
    Map<String, String> values = new HashMap<>();
    values.put("target", env("OTP_STEP_TARGET", "127.0.0.1:50051"));
    values.put("outbox", env("OTP_STEP_OUTBOX_URL", "http://127.0.0.1:4566/_outbox"));
    values.put("identifier", env("OTP_STEP_IDENTIFIER", "ada@example.com"));
    values.put("connection", env("OTP_STEP_CONNECTION", "demo"));
    values.put("timeout-ms", env("OTP_STEP_TIMEOUT_MS", "10000"));
    values.put("keepalive-ms", env("OTP_STEP_KEEPALIVE_MS", "30000"));
    for (int i = 0; i < args.length; i++) {
      String arg = args[i];
      if (!arg.startsWith("--")) {
        throw new JourneyFailed("unexpected argument " + arg);
      }
      String name = arg.substring(2);
      String value;
      int equals = name.indexOf('=');
      if (equals >= 0) {
        value = name.substring(equals + 1);
        name = name.substring(0, equals);
      } else if (i + 1 < args.length) {
        value = args[++i];
      } else {
        throw new JourneyFailed("--" + name + " needs a value");
      }
      if (!values.containsKey(name)) {
        throw new JourneyFailed("unknown flag --" + name + "; known: " + values.keySet());
      }
      values.put(name, value);
    }
    return values;
  }

  private static String env(String name, String fallback) {
    String value = System.getenv(name);
    return value == null || value.isEmpty() ? fallback : value;
  }
}
