#include "agent/daemon.hpp"

#include <date/tz.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "agent/metrics.hpp"
#include "agent/metrics_http.hpp"
#include "vault/clock.hpp"
#include "vault/error.hpp"

namespace reduit {

namespace {

void log(const char* fmt, const std::string& a = "", const std::string& b = "", const std::string& c = "") {
  std::fprintf(stderr, "reduit-agent: ");
  std::fprintf(stderr, fmt, a.c_str(), b.c_str(), c.c_str());
  std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

enum class Wake { kTime, kStop, kReload };

// The agent's sense of time. The real one sleeps in sigtimedwait with SIGTERM, SIGINT
// and SIGHUP blocked (so they are never lost between checks); the simulated one jumps.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual UnixSeconds now() = 0;
  /// Waits until `t`; returns early with kStop/kReload on a signal (or, simulated,
  /// kStop when `t` is past the end).
  virtual Wake wait_until(UnixSeconds t) = 0;
  /// Runs one attempt of `job`; sets `interrupted` when SIGTERM cut it short.
  virtual int run(const JobConfig& job, const std::string& config_path, const std::string& scratch,
                  std::string& summary, bool& interrupted) = 0;
};

sigset_t agent_signals(bool with_child) {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGTERM);
  sigaddset(&s, SIGINT);
  sigaddset(&s, SIGHUP);
  if (with_child) sigaddset(&s, SIGCHLD);
  return s;
}

std::string last_line(const std::string& text) {
  std::string t = text;
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
  auto p = t.rfind('\n');
  return p == std::string::npos ? t : t.substr(p + 1);
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs argv with stdout/stderr to files under `scratch`; forwards SIGTERM/SIGINT.
// `reload` is set when SIGHUP arrived meanwhile.
int run_child(const std::vector<std::string>& argv, const std::string& scratch, std::string& summary,
              bool& interrupted, bool& reload) {
  std::string out_path = scratch + "/job.stdout", err_path = scratch + "/job.stderr";
  sigset_t waitset = agent_signals(true), old;
  sigprocmask(SIG_BLOCK, &waitset, &old);
  pid_t pid = fork();
  if (pid < 0) throw_errno("fork", errno);
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    int o = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int e = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int in = ::open("/dev/null", O_RDONLY);
    if (o < 0 || e < 0 || in < 0) _exit(127);
    dup2(in, 0);
    dup2(o, 1);
    dup2(e, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    std::fprintf(stderr, "cannot execute %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  int status = 0;
  for (;;) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    timespec ts{1, 0};
    int sig = sigtimedwait(&waitset, nullptr, &ts);
    if (sig == SIGTERM || sig == SIGINT) {
      if (!interrupted) log("stopping: forwarding SIGTERM to job pid %s", std::to_string(pid));
      interrupted = true;
      kill(pid, SIGTERM);
    } else if (sig == SIGHUP) {
      reload = true;
    }
  }
  sigprocmask(SIG_SETMASK, &old, nullptr);
  std::string out = slurp(out_path), err = slurp(err_path);
  std::error_code ec;
  std::filesystem::remove(out_path, ec);
  std::filesystem::remove(err_path, ec);
  int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  auto j = nlohmann::json::parse(out, nullptr, false);
  if (!j.is_discarded() && j.is_object()) {
    summary = j.dump();
  } else {
    nlohmann::json s = {{"stderr", last_line(err)}};
    summary = s.dump();
  }
  if (rc != 0 && rc != 1 && !err.empty()) log("job stderr: %s", last_line(err));
  return rc;
}

int run_steps(const JobConfig& job, const std::string& config_path, const std::string& scratch,
              std::string& summary, bool& interrupted, bool& reload) {
  if (!job.exec.empty()) return run_child(job.exec, scratch, summary, interrupted, reload);
  int rc = 0;
  nlohmann::json all = nlohmann::json::array();
  for (const auto& step : job.steps) {
    std::vector<std::string> argv{"/proc/self/exe"};
    if (!config_path.empty()) argv.insert(argv.end(), {"--config", config_path});
    argv.push_back("--json");
    argv.insert(argv.end(), step.begin(), step.end());
    std::string s;
    int r = run_child(argv, scratch, s, interrupted, reload);
    if (job.steps.size() == 1) summary = s;
    all.push_back(nlohmann::json::parse(s, nullptr, false));
    rc = std::max(rc, r);
    if ((r != 0 && r != 1) || interrupted) {
      rc = r;
      break;
    }
  }
  if (job.steps.size() != 1) summary = nlohmann::json{{"steps", all}}.dump();
  return rc;
}

// REDUIT_NOW (vault/clock.hpp) sets the instant the agent starts at; its clock then
// advances with the real one (tests of key expiry and RPO against a chosen "now").
class RealClock : public Clock {
 public:
  RealClock() {
    if (std::getenv("REDUIT_NOW")) offset_ns_ = clock_now_ns() - wall_ns();
  }
  UnixSeconds now() override { return (wall_ns() + offset_ns_) / 1000000000; }
  Wake wait_until(UnixSeconds t) override {
    if (pending_stop_) return Wake::kStop;
    if (pending_reload_) {
      pending_reload_ = false;
      return Wake::kReload;
    }
    sigset_t set = agent_signals(false);
    for (;;) {
      UnixSeconds n = now();
      if (n >= t) return Wake::kTime;
      timespec ts{std::min<UnixSeconds>(t - n, 60), 0};
      int sig = sigtimedwait(&set, nullptr, &ts);
      if (sig == SIGTERM || sig == SIGINT) return Wake::kStop;
      if (sig == SIGHUP) return Wake::kReload;
    }
  }
  int run(const JobConfig& job, const std::string& config_path, const std::string& scratch,
          std::string& summary, bool& interrupted) override {
    bool reload = false;
    int rc = run_steps(job, config_path, scratch, summary, interrupted, reload);
    pending_stop_ = pending_stop_ || interrupted;
    pending_reload_ = pending_reload_ || reload;
    return rc;
  }

 private:
  static std::int64_t wall_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  std::int64_t offset_ns_ = 0;
  bool pending_stop_ = false, pending_reload_ = false;
};

class SimClock : public Clock {
 public:
  SimClock(UnixSeconds from, UnixSeconds to, bool execute) : now_(from), end_(to), execute_(execute) {}
  UnixSeconds now() override { return now_; }
  Wake wait_until(UnixSeconds t) override {
    if (t >= end_) {
      now_ = end_;
      return Wake::kStop;
    }
    now_ = std::max(now_, t);
    return Wake::kTime;
  }
  int run(const JobConfig& job, const std::string& config_path, const std::string& scratch,
          std::string& summary, bool& interrupted) override {
    if (!execute_) {
      summary = "{\"simulated\":true}";
      return 0;
    }
    bool reload = false;
    return run_steps(job, config_path, scratch, summary, interrupted, reload);
  }

 private:
  UnixSeconds now_, end_;
  bool execute_;
};

bool retryable(int rc) {
  return rc == exit_status(ErrorCode::kLockHeld) || rc == exit_status(ErrorCode::kUnreachable);
}

bool good(int rc) {
  return rc == 0 || rc == 1;
}

// One agent process lifetime (or one "up" interval of a simulation).
class Agent {
 public:
  Agent(Config cfg, const AgentOptions& opt, Catalog& cat, Clock& clock, std::string scratch)
      : cfg_(std::move(cfg)), opt_(opt), cat_(cat), clock_(clock), scratch_(std::move(scratch)) {
    tz_ = schedule_zone(cfg_.schedule);
  }

  void run() {
    since_ = agent_since(cat_, clock_.now());
    UnixSeconds ignored = 0;
    check_keys(clock_.now(), ignored);
    write_metrics();
    start_http();
    if (!opt_.simulate) {
      sd_notify(0, "READY=1\nSTATUS=waiting for the next job");
      log("started: %s job(s), time zone %s", std::to_string(cfg_.schedule.jobs.size()), tz_->name());
    }
    for (;;) {
      UnixSeconds now = clock_.now();
      std::optional<DueJob> next;
      for (const auto& j : cfg_.schedule.jobs) {
        DueJob d = next_due(j, tz_, cat_, since_, now);
        if (!next || d.run_at < next->run_at) next = d;
      }
      UnixSeconds wake = next ? next->run_at : now + 3600;
      check_rpo(now, wake);
      check_keys(now, wake);
      Wake w = clock_.wait_until(wake);
      if (w == Wake::kStop) break;
      if (w == Wake::kReload) {
        reload();
        continue;
      }
      if (!next || clock_.now() < next->run_at) continue;  // woke for the RPO or key check
      if (!run_occurrence(*next)) break;
    }
    http_.reset();
    if (!opt_.simulate) {
      sd_notify(0, "STOPPING=1");
      log("stopped");
    }
  }

 private:
  // Runs one occurrence with its retries; false when the agent must stop.
  bool run_occurrence(const DueJob& d) {
    const JobConfig& job = *d.job;
    UnixSeconds window_end = next_occurrence(job.when, tz_, d.scheduled);
    std::int64_t delay = job.retry_delay;
    for (int attempt = 1;; ++attempt) {
      if (!opt_.simulate) {
        sd_notify(0, ("STATUS=running " + job.name).c_str());
        log("running %s (scheduled %s, attempt %s)", job.name, format_local(tz_, d.scheduled),
            std::to_string(attempt));
      }
      JobRun r;
      r.job = job.name;
      r.scheduled = d.scheduled;
      r.attempt = attempt;
      r.started = clock_.now();
      bool interrupted = false;
      r.exit_code = clock_.run(job, opt_.config_path, scratch_, r.summary, interrupted);
      r.ended = clock_.now();
      if (interrupted) r.summary = kInterrupted;
      cat_.add_job_run(r);
      runs_.push_back(r);
      write_metrics();
      if (interrupted) return false;
      if (good(r.exit_code)) {
        if (!opt_.simulate)
          sd_notify(0, ("STATUS=last: " + job.name + " ok at " + format_local(tz_, r.ended)).c_str());
        return true;
      }
      UnixSeconds retry_at = r.ended + delay;
      if (retryable(r.exit_code) && attempt <= job.retries && retry_at < window_end) {
        log("%s failed (exit %s); retrying at %s", job.name, std::to_string(r.exit_code),
            format_local(tz_, retry_at));
        delay *= 2;
        Wake w = clock_.wait_until(retry_at);
        if (w == Wake::kStop) return false;
        if (w == Wake::kReload) reload();
        continue;
      }
      std::string why = "job " + job.name + " scheduled " + format_local(tz_, d.scheduled) +
                        " failed after " + std::to_string(attempt) + " attempt(s), last exit " +
                        std::to_string(r.exit_code);
      log("ALERT: %s: %s", why, r.summary);
      if (!opt_.simulate) {
        sd_notify(
            0, ("STATUS=last: " + job.name + " FAILED (exit " + std::to_string(r.exit_code) + ")").c_str());
      }
      if (sends_mail()) alert(job.name + " failed", why + "\n\nLast attempt's output:\n" + r.summary + "\n");
      return true;
    }
  }

  void alert(const std::string& subject, const std::string& body) {
    std::string err = send_alert_mail(cfg_.alerts, subject, body);
    if (!err.empty()) log("cannot send alert e-mail through %s: %s", cfg_.alerts.smtp_url, err);
  }

  // Alerts once when the last good backup becomes older than the RPO; lowers `wake`
  // to the moment that happens.
  void check_rpo(UnixSeconds now, UnixSeconds& wake) {
    bool has_backup = std::any_of(cfg_.schedule.jobs.begin(), cfg_.schedule.jobs.end(),
                                  [](const JobConfig& j) { return j.name == "backup"; });
    if (!has_backup) return;
    UnixSeconds last = since_;
    for (const auto& r : cat_.job_runs("backup", 1000))
      if (good(r.exit_code) && r.summary != kInterrupted) last = std::max(last, r.ended);
    UnixSeconds deadline = last + cfg_.schedule.rpo;
    if (now < deadline) {
      rpo_alerted_ = false;
      wake = std::min(wake, deadline);
      return;
    }
    if (rpo_alerted_) return;
    rpo_alerted_ = true;
    std::string why = "the last good backup ended " + format_local(tz_, last) + ", " +
                      format_duration(now - last) + " ago; the RPO is " + format_duration(cfg_.schedule.rpo);
    log("ALERT: RPO exceeded: %s", why);
    if (sends_mail()) alert("backup older than the RPO", why + "\n");
  }

  // A real agent, and a simulation that really runs its jobs (--execute), mail
  // their alerts; a dry simulation only logs them.
  bool sends_mail() const { return !opt_.simulate || opt_.execute; }

  // Reads the vault keys' expiry from the keyring (for metrics and alerts); logs
  // each problem once.
  std::vector<KeyExpiry> refresh_keys() {
    std::vector<std::string> problems;
    std::vector<KeyExpiry> keys;
    try {
      keys = vault_key_expiries(cfg_.gnupghome, cat_, &problems);
    } catch (const Error& e) {
      problems.push_back(e.what());
    }
    for (const auto& p : problems)
      if (key_problems_logged_.insert(p).second) log("cannot read a key's expiry: %s", p);
    std::lock_guard<std::mutex> lock(mu_);
    keys_ = keys;
    return keys;
  }

  // Refreshes the vault keys' expiry (for metrics) and alerts once per key and
  // expiry date when it is less than [alerts] key_expiry_days away; lowers `wake`
  // to the moment the next key enters that window. The catalog remembers the
  // expiry alerted for (meta "alert.key_expiry.<fpr>"): a renewed key (a new
  // expiry) re-arms, and a restart does not repeat the alert.
  void check_keys(UnixSeconds now, UnixSeconds& wake) {
    std::vector<KeyExpiry> keys = refresh_keys();
    const std::int64_t window = static_cast<std::int64_t>(cfg_.alerts.key_expiry_days) * 86400;
    if (window <= 0) return;
    for (const auto& k : keys) {
      if (k.expires == 0) continue;
      if (now < k.expires - window) {
        wake = std::min(wake, k.expires - window);
        continue;
      }
      const std::string meta = "alert.key_expiry." + k.fingerprint;
      if (cat_.get_meta(meta) == std::to_string(k.expires)) continue;
      cat_.set_meta(meta, std::to_string(k.expires));
      std::string when = format_local(tz_, k.expires);
      std::string why =
          "the " + k.role + " key " + k.fingerprint + " of the vault " +
          (now < k.expires ? "expires " + when + ", in " + format_duration(k.expires - now)
                           : "expired " + when + ", " + format_duration(now - k.expires) + " ago");
      log("ALERT: key expiry: %s", why);
      if (sends_mail()) {
        alert(
            k.role + " key " + k.fingerprint.substr(k.fingerprint.size() - 16) +
                (now < k.expires ? " expires " : " expired ") + when,
            why + ".\n\n" +
                (k.role == "archive"
                     ? "Backups cannot encrypt to an expired archive key. Extend it where its secret key is "
                       "kept (gpg --quick-set-expire " +
                           k.fingerprint + " 1y) and import the public key into the agent's keyring.\n"
                     : "The agent cannot sign with an expired key. Extend it (gpg --quick-set-expire " +
                           k.fingerprint + " 1y) in the agent's keyring.\n"));
      }
    }
  }

  // The loopback HTTP endpoint ([schedule] metrics_listen), real runs only. It
  // renders on its own thread with its own catalog connection.
  void start_http() {
    if (opt_.simulate || cfg_.schedule.metrics_listen.empty()) return;
    try {
      ListenAddress addr = parse_loopback_listen(cfg_.schedule.metrics_listen);
      auto catalog = std::make_shared<std::unique_ptr<Catalog>>();
      http_ = std::make_unique<MetricsHttpServer>(addr, [this, catalog] {
        std::lock_guard<std::mutex> lock(mu_);
        if (!*catalog) *catalog = std::make_unique<Catalog>(cfg_.state_dir);
        return render_metrics(cfg_, **catalog, clock_.now(), keys_);
      });
      log("serving metrics on http://%s/metrics", cfg_.schedule.metrics_listen);
    } catch (const Error& e) {
      log("ALERT: cannot serve metrics: %s", e.what());
    }
  }

  void reload() {
    if (opt_.config_path.empty()) {
      log("SIGHUP: running on the built-in config; nothing to reload");
      return;
    }
    try {
      Config c = load_config(opt_.config_path);
      const date::time_zone* tz = schedule_zone(c.schedule);
      if (c.schedule.jobs.empty())
        throw Error(ErrorCode::kUsage, opt_.config_path + ": [schedule] has no jobs");
      if (c.schedule.metrics_listen != cfg_.schedule.metrics_listen)
        log("SIGHUP: metrics_listen changed; it takes effect at the next start");
      std::lock_guard<std::mutex> lock(mu_);
      cfg_ = std::move(c);
      tz_ = tz;
      log("SIGHUP: reloaded %s (%s job(s))", opt_.config_path, std::to_string(cfg_.schedule.jobs.size()));
    } catch (const Error& e) {
      log("SIGHUP: keeping the running config: %s", e.what());
    }
  }

  void write_metrics() {
    if (cfg_.schedule.metrics_file.empty()) return;
    refresh_keys();  // a job may have cached the vault config, or a key was renewed
    try {
      std::string text;
      {
        std::lock_guard<std::mutex> lock(mu_);
        text = render_metrics(cfg_, cat_, clock_.now(), keys_);
      }
      write_file_atomically(cfg_.schedule.metrics_file, text);
    } catch (const Error& e) {
      log("cannot write metrics: %s", e.what());
    }
  }

  Config cfg_;
  const AgentOptions& opt_;
  Catalog& cat_;
  Clock& clock_;
  std::string scratch_;
  const date::time_zone* tz_ = nullptr;
  UnixSeconds since_ = 0;
  bool rpo_alerted_ = false;
  std::set<std::string> key_problems_logged_;
  // Guards cfg_ and keys_ against the HTTP thread (which only reads them).
  std::mutex mu_;
  std::vector<KeyExpiry> keys_;
  std::unique_ptr<MetricsHttpServer> http_;

 public:
  std::vector<JobRun> runs_;
};

}  // namespace

UnixSeconds agent_since(Catalog& cat, UnixSeconds now) {
  if (auto s = cat.get_meta("agent.since")) return std::stoll(*s);
  cat.set_meta("agent.since", std::to_string(now));
  return now;
}

DueJob next_due(const JobConfig& job, const date::time_zone* tz, Catalog& cat, UnixSeconds since,
                UnixSeconds now) {
  UnixSeconds base = since;
  bool any = false;
  for (const auto& r : cat.job_runs(job.name, 50)) {
    if (r.summary == kInterrupted) continue;
    base = any ? std::max(base, r.scheduled) : r.scheduled;
    any = true;
  }
  DueJob d;
  d.job = &job;
  UnixSeconds occ = next_occurrence(job.when, tz, base);
  if (occ > now) {
    d.scheduled = occ;
    d.run_at = occ + occurrence_delay(job, occ);
    return d;
  }
  // Missed (or due now): the latest occurrence at or before now, once.
  for (UnixSeconds n; (n = next_occurrence(job.when, tz, occ)) <= now;) occ = n;
  d.scheduled = occ;
  d.run_at = std::max(now, occ + occurrence_delay(job, occ));
  d.missed = true;
  return d;
}

UnixSeconds parse_local_time(const std::string& text, const date::time_zone* tz) {
  std::istringstream in(text);
  date::local_seconds lt;
  in >> date::parse("%Y-%m-%dT%H:%M", lt);
  if (in.fail() || in.peek() != std::char_traits<char>::eof())
    throw Error(ErrorCode::kUsage, "'" + text + "' is not a local time YYYY-MM-DDTHH:MM");
  return tz->to_sys(lt, date::choose::earliest).time_since_epoch().count();
}

std::vector<JobRun> run_agent(const Config& cfg, const AgentOptions& opt) {
  if (cfg.schedule.jobs.empty())
    throw Error(ErrorCode::kUsage, cfg.origin + ": [schedule] has no jobs: the agent has nothing to run");
  if (!opt.simulate) {
    Catalog cat(cfg.state_dir);
    sigset_t set = agent_signals(false);
    sigprocmask(SIG_BLOCK, &set, nullptr);
    RealClock clock;
    Agent a(cfg, opt, cat, clock, cfg.state_dir);
    a.run();
    return {};
  }
  std::string state = opt.sim_state;
  std::unique_ptr<std::string, void (*)(std::string*)> cleanup(nullptr, [](std::string* p) {
    std::error_code ec;
    std::filesystem::remove_all(*p, ec);
    delete p;
  });
  if (state.empty()) {
    char tmpl[] = "/tmp/reduit-simulate.XXXXXX";
    if (!mkdtemp(tmpl)) throw_errno("mkdtemp", errno);
    state = tmpl;
    cleanup.reset(new std::string(state));
  }
  Catalog cat(state);
  // The up intervals: [from, to) minus the down intervals; each is one agent lifetime.
  std::vector<std::pair<UnixSeconds, UnixSeconds>> up;
  UnixSeconds t = opt.sim_from;
  auto down = opt.down;
  std::sort(down.begin(), down.end());
  for (const auto& [a, b] : down) {
    if (a > t) up.emplace_back(t, std::min(a, opt.sim_to));
    t = std::max(t, b);
  }
  if (t < opt.sim_to) up.emplace_back(t, opt.sim_to);
  std::vector<JobRun> runs;
  for (const auto& [a, b] : up) {
    if (a >= b) continue;
    SimClock clock(a, b, opt.execute);
    Agent agent(cfg, opt, cat, clock, state);
    agent.run();
    runs.insert(runs.end(), agent.runs_.begin(), agent.runs_.end());
  }
  return runs;
}

}  // namespace reduit
