#include "ctl.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <thread>

#include <boost/json.hpp>
#include <boost/program_options.hpp>
#include <sqlite3.h>

#include "config.h"
#include "paths.h"
#include "pricing.h"
#include "replicate.h"
#include "sqlite.h"
#include "store.h"
#include "timefmt.h"

namespace predictd {
namespace po = boost::program_options;
namespace json = boost::json;

namespace {

constexpr int kOk = 0, kNotSucceeded = 1, kUsage = 64, kConfig = 78;

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const char* kUsageText =
    "Usage: predictctl (--db FILE | --config FILE) [--json] COMMAND [ARGS]\n"
    "Commands:\n"
    "  init                                  create or migrate the database\n"
    "  enqueue MODEL --input JSON|@FILE [--version V] [--priority N] [--timeout S] [--not-before TIME]\n"
    "  show ID                               one job as JSON\n"
    "  list [--status S] [--limit N]         newest jobs first\n"
    "  cancel ID                             request cancellation\n"
    "  wait ID [--timeout S]                 until terminal; exit 0 only when succeeded\n"
    "  stats                                 counts by status, credits, oldest queued job, archives\n"
    "  models                                the catalog with the credits of one unit\n";

json::value opt(const std::optional<std::string>& v) { return v ? json::value(*v) : json::value(nullptr); }
json::value opt(const std::optional<int64_t>& v) { return v ? json::value(*v) : json::value(nullptr); }
json::value opt(const std::optional<double>& v) { return v ? json::value(*v) : json::value(nullptr); }
json::value parsed(const std::optional<std::string>& v) {
  if (!v) return nullptr;
  json::error_code ec;
  json::value out = json::parse(*v, ec);
  return ec ? json::value(*v) : out;
}

json::object row_json(const JobRow& r) {
  json::object o;
  o["id"] = r.id;
  o["model"] = opt(r.model);
  o["version"] = opt(r.version);
  o["input"] = parsed(r.input);
  o["priority"] = r.priority;
  o["not_before"] = opt(r.not_before);
  o["timeout_s"] = opt(r.timeout_s);
  o["cancel_requested"] = r.cancel_requested;
  o["status"] = to_string(r.status);
  o["prediction_id"] = opt(r.prediction_id);
  o["output"] = parsed(r.output);
  o["error"] = opt(r.error);
  o["attempts"] = r.attempts;
  o["units"] = opt(r.units);
  o["cost_credits"] = opt(r.cost_credits);
  o["predict_time_s"] = opt(r.predict_time_s);
  o["files"] = parsed(r.files);
  o["archive_error"] = opt(r.archive_error);
  o["created_at"] = r.created_at;
  o["submitted_at"] = opt(r.submitted_at);
  o["started_at"] = opt(r.started_at);
  o["completed_at"] = opt(r.completed_at);
  o["updated_at"] = opt(r.updated_at);
  return o;
}

int64_t parse_id(const std::string& s) {
  try {
    std::size_t used = 0;
    long long id = std::stoll(s, &used);
    if (used == s.size() && id > 0) return id;
  } catch (const std::exception&) {
  }
  throw UsageError("\"" + s + "\" is not a job id");
}

std::string now_utc() { return format_utc(std::chrono::system_clock::now()); }

// Program options takes "-1" for an option name: "--priority -1" becomes "--priority=-1".
std::vector<std::string> join_negative_values(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (const std::string& a : args) {
    const bool negative = a.size() > 1 && a[0] == '-' && (std::isdigit(static_cast<unsigned char>(a[1])) || a[1] == '.');
    if (negative && !out.empty() && out.back().starts_with("--") && out.back().find('=') == std::string::npos)
      out.back() += "=" + a;
    else
      out.push_back(a);
  }
  return out;
}

constexpr const char* kCommands[] = {"init", "enqueue", "show", "list", "cancel", "wait", "stats", "models"};

class Ctl {
 public:
  Ctl(std::ostream& out, std::ostream& err) : out_(out), err_(err) {}

  int run(const std::vector<std::string>& args) {
    po::options_description global("Options");
    global.add_options()("db", po::value<std::string>())("config", po::value<std::string>())("json", "")(
        "help,h", "")("command", po::value<std::string>())("rest", po::value<std::vector<std::string>>());
    po::positional_options_description pos;
    pos.add("command", 1).add("rest", -1);
    po::variables_map vm;
    po::parsed_options parsed_opts =
        po::command_line_parser(args).options(global).positional(pos).allow_unregistered().run();
    po::store(parsed_opts, vm);
    if (vm.count("help") || !vm.count("command")) {
      (vm.count("help") ? out_ : err_) << kUsageText;
      return vm.count("help") ? kOk : kUsage;
    }
    json_ = vm.count("json") > 0;
    command_ = vm["command"].as<std::string>();
    rest_ = po::collect_unrecognized(parsed_opts.options, po::include_positional);
    // collect_unrecognized returns the command too: drop everything up to it.
    auto it = std::find(rest_.begin(), rest_.end(), command_);
    // Anything unrecognized before the command is not one of the global options.
    if (it != rest_.begin()) throw UsageError("unknown option \"" + rest_.front() + "\" (see predictctl --help)");
    rest_.erase(rest_.begin(), it + 1);
    rest_ = join_negative_values(rest_);
    if (std::find(std::begin(kCommands), std::end(kCommands), command_) == std::end(kCommands))
      throw UsageError("unknown command \"" + command_ + "\" (see predictctl --help)");

    if (vm.count("config")) {
      try {
        config_ = load_config(vm["config"].as<std::string>());
      } catch (const ConfigError& e) {
        err_ << "predictctl: " << vm["config"].as<std::string>() << ": " << e.what() << "\n";
        return kConfig;
      }
      db_path_ = config_.db_path;
      have_config_ = true;
    }
    if (vm.count("db")) db_path_ = vm["db"].as<std::string>();
    if (command_ == "models") return models();
    if (db_path_.empty()) throw UsageError("--db FILE or --config FILE is required");

    if (command_ == "init") return init();
    open(false);
    if (command_ == "enqueue") return enqueue();
    if (command_ == "show") return show();
    if (command_ == "list") return list();
    if (command_ == "cancel") return cancel();
    if (command_ == "wait") return wait();
    return stats();
  }

 private:
  po::variables_map sub(po::options_description& desc, po::positional_options_description* pos = nullptr) {
    po::variables_map vm;
    auto parser = po::command_line_parser(rest_).options(desc);
    if (pos) parser.positional(*pos);
    po::store(parser.run(), vm);
    po::notify(vm);
    return vm;
  }

  void no_arguments() {
    if (!rest_.empty()) throw UsageError(command_ + " takes no arguments (got \"" + rest_.front() + "\")");
  }

  void open(bool create) {
    if (!create && !std::filesystem::exists(db_path_))
      throw UsageError("no database at " + db_path_ + " (run predictctl init)");
    // A path that is no database (a directory, another file, a directory that
    // does not exist) is the caller's mistake: say which, before SQLite does.
    if (auto problem = db_path_problem(db_path_, create ? DbUse::write : DbUse::read)) throw UsageError(*problem);
    try {
      store_ = Store::open(db_path_, create);
    } catch (const DbError& e) {
      // The header looked right but the rest is not a database (cut short, overwritten).
      if ((e.code() & 0xff) == SQLITE_NOTADB) throw UsageError(db_path_ + ": not a SQLite database");
      throw;
    }
    // A person at a prompt can wait for another writer longer than the daemon's loop can.
    store_->db().set_busy_timeout(5000);
  }

  int init() {
    no_arguments();
    open(true);
    out_ << "initialized " << db_path_ << " (schema version " << store_->schema_version() << ")\n";
    return kOk;
  }

  int enqueue() {
    po::options_description d;
    d.add_options()("model", po::value<std::string>())("input", po::value<std::string>())(
        "version", po::value<std::string>())("priority", po::value<int64_t>()->default_value(0))(
        "timeout", po::value<int64_t>())("not-before", po::value<std::string>());
    po::positional_options_description pos;
    pos.add("model", 1);
    auto vm = sub(d, &pos);
    if (!vm.count("input")) throw UsageError("enqueue needs --input JSON or --input @FILE");
    NewJob job;
    if (vm.count("model")) job.model = vm["model"].as<std::string>();
    if (vm.count("version")) job.version = vm["version"].as<std::string>();
    if (!job.model && !job.version) throw UsageError("enqueue needs a MODEL or --version");
    std::string input = vm["input"].as<std::string>();
    if (!input.empty() && input[0] == '@') {
      std::ifstream in(input.substr(1), std::ios::binary);
      if (!in) throw UsageError("cannot read " + input.substr(1) + ": " + std::strerror(errno));
      std::ostringstream ss;
      ss << in.rdbuf();
      input = ss.str();
    }
    if (auto e = check_input_object(input)) throw UsageError(*e);
    job.input = input;
    // Only the daemon's own config says what it will run; without it the
    // defaults may lack a model the daemon lists, so warn and let it decide.
    if (auto problem = catalog_problem(job, have_config_ ? "the catalog" : "the default catalog")) {
      if (have_config_) throw UsageError(*problem + " (see predictctl models)");
      err_ << "predictctl: warning: " << *problem << "; predictd fails the job unless its config lists it "
           << "(--config FILE checks against that)\n";
    }
    job.priority = vm["priority"].as<int64_t>();
    if (vm.count("timeout")) {
      job.timeout_s = vm["timeout"].as<int64_t>();
      if (*job.timeout_s <= 0) throw UsageError("--timeout must be a positive number of seconds");
    }
    if (vm.count("not-before")) {
      job.not_before = vm["not-before"].as<std::string>();
      if (!parse_utc(*job.not_before)) throw UsageError("--not-before must be a UTC time like 2026-11-25T10:00:00Z");
    }
    out_ << store_->insert(job) << "\n";
    return kOk;
  }

  // Why the daemon would fail this job for its model or version (SPEC §2).
  std::optional<std::string> catalog_problem(const NewJob& job, const std::string& catalog) const {
    if (job.version) {
      const ModelEntry* e = config_.models.find_version(*job.version);
      if (!e) return "version " + *job.version + " is not in " + catalog;
      if (job.model && *job.model != e->name)
        return "model " + *job.model + " does not match version " + *job.version + " (" + e->name + ")";
      return std::nullopt;
    }
    if (!config_.models.find_model(*job.model)) return "model " + *job.model + " is not in " + catalog;
    return std::nullopt;
  }

  JobRow get(const std::string& id_text) {
    auto row = store_->get(parse_id(id_text));
    if (!row) throw UsageError("no job " + id_text);
    return *row;
  }

  std::string one_id() {
    po::options_description d;
    d.add_options()("id", po::value<std::string>());
    po::positional_options_description pos;
    pos.add("id", 1);
    auto vm = sub(d, &pos);
    if (!vm.count("id")) throw UsageError(command_ + " needs a job ID");
    return vm["id"].as<std::string>();
  }

  int show() {
    out_ << json::serialize(row_json(get(one_id()))) << "\n";
    return kOk;
  }

  int list() {
    po::options_description d;
    d.add_options()("status", po::value<std::string>())("limit", po::value<int>()->default_value(50));
    auto vm = sub(d);
    std::optional<JobStatus> status;
    if (vm.count("status")) {
      status = parse_job_status(vm["status"].as<std::string>());
      if (!status) throw UsageError("unknown status \"" + vm["status"].as<std::string>() + "\"");
    }
    const int limit = vm["limit"].as<int>();
    if (limit <= 0) throw UsageError("--limit must be positive");
    auto rows = store_->list(status, limit);
    if (json_) {
      json::array a;
      for (const auto& r : rows) a.push_back(row_json(r));
      out_ << json::serialize(a) << "\n";
      return kOk;
    }
    out_ << std::left << std::setw(8) << "ID" << std::setw(42) << "MODEL" << std::setw(12) << "STATUS"
         << std::setw(7) << "UNITS" << std::setw(9) << "CREDITS" << "CREATED\n";
    for (const auto& r : rows) {
      out_ << std::left << std::setw(8) << r.id << std::setw(42)
           << r.model.value_or(r.version ? r.version->substr(0, 12) : "-") << std::setw(12) << to_string(r.status)
           << std::setw(7) << (r.units ? std::to_string(*r.units) : "-") << std::setw(9)
           << (r.cost_credits ? std::to_string(*r.cost_credits) : "-") << r.created_at << "\n";
    }
    return kOk;
  }

  int cancel() {
    const std::string id = one_id();
    JobRow row = get(id);
    if (!is_terminal(row.status) && store_->request_cancel(row.id)) {
      out_ << "cancel requested for job " << id << "\n";
      return kOk;
    }
    row = get(id);  // it may have finished between the read and the update
    err_ << "predictctl: job " << id << " already finished (" << to_string(row.status) << "); nothing to cancel\n";
    return kNotSucceeded;
  }

  int wait() {
    po::options_description d;
    d.add_options()("id", po::value<std::string>())("timeout", po::value<double>());
    po::positional_options_description pos;
    pos.add("id", 1);
    auto vm = sub(d, &pos);
    if (!vm.count("id")) throw UsageError("wait needs a job ID");
    const std::string id = vm["id"].as<std::string>();
    auto deadline = std::chrono::steady_clock::time_point::max();
    if (vm.count("timeout")) {
      const double s = vm["timeout"].as<double>();
      if (!(s >= 0 && s < 1e9)) throw UsageError("--timeout must be a number of seconds");
      deadline = std::chrono::steady_clock::now() +
                 std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
    }
    store_->changed_by_others();  // the baseline: the read below sees at least this version
    JobRow row = get(id);
    for (;;) {
      // The row is read again only after some commit: data_version is cheaper than a query.
      if (store_->changed_by_others()) row = get(id);
      if (is_terminal(row.status)) {
        out_ << to_string(row.status) << (row.error ? ": " + *row.error : "") << "\n";
        return row.status == JobStatus::succeeded ? kOk : kNotSucceeded;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        err_ << "predictctl: job " << id << " is still " << to_string(row.status) << " after the timeout\n";
        return kNotSucceeded;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  int stats() {
    no_arguments();
    auto st = store_->stats(now_utc());
    static const JobStatus kAll[] = {JobStatus::queued,    JobStatus::submitting, JobStatus::starting,
                                     JobStatus::processing, JobStatus::succeeded, JobStatus::failed,
                                     JobStatus::canceled};
    if (json_) {
      json::object by;
      for (auto s : kAll) by[to_string(s)] = st.by_status[static_cast<int>(s)];
      json::object o{{"by_status", by},
                     {"credits_today", st.credits_today},
                     {"credits_all_time", st.credits_all_time},
                     {"oldest_queued_age_s", opt(st.oldest_queued_age_s)}};
      if (archive_shown(st))
        o["archive"] = json::object{{"files", st.archived_files},
                                    {"bytes", st.archived_bytes},
                                    {"pending", st.archive_pending},
                                    {"failed", st.archive_failed}};
      out_ << json::serialize(o) << "\n";
      return kOk;
    }
    for (auto s : kAll) out_ << std::left << std::setw(22) << to_string(s) << st.by_status[static_cast<int>(s)] << "\n";
    out_ << std::left << std::setw(22) << "credits today (UTC)" << st.credits_today << "\n";
    out_ << std::left << std::setw(22) << "credits all time" << st.credits_all_time << "\n";
    out_ << std::left << std::setw(22) << "oldest queued" << std::fixed << std::setprecision(1)
         << (st.oldest_queued_age_s ? std::to_string(static_cast<int64_t>(*st.oldest_queued_age_s)) + " s" : "-")
         << "\n";
    if (archive_shown(st)) {
      out_ << std::left << std::setw(22) << "archived files" << st.archived_files << "\n";
      out_ << std::left << std::setw(22) << "archived bytes" << st.archived_bytes << "\n";
      out_ << std::left << std::setw(22) << "archive pending" << st.archive_pending << "\n";
      out_ << std::left << std::setw(22) << "archive failed" << st.archive_failed << "\n";
    }
    return kOk;
  }

  // Without archiving every succeeded job would count as pending: shown when
  // the config turns it on (--config) or the database holds archive results.
  bool archive_shown(const StoreStats& st) const {
    return config_.archive.dir || st.archived_files > 0 || st.archive_failed > 0;
  }

  int models() {
    no_arguments();
    if (json_) {
      json::array a;
      for (const auto& e : config_.models.entries()) {
        json::object o{{"model", e.name},
                       {"price_usd", e.price_usd.to_string()},
                       {"per", to_string(e.per)},
                       {"version", e.version ? json::value(*e.version) : json::value(nullptr)},
                       {"expected_s", e.expected_s},
                       {"credits_per_unit", cost_credits(e, 1, config_.billing)}};
        a.push_back(std::move(o));
      }
      out_ << json::serialize(a) << "\n";
      return kOk;
    }
    out_ << std::left << std::setw(42) << "MODEL" << std::setw(10) << "USD" << std::setw(7) << "PER" << std::setw(9)
         << "CREDITS" << "VERSION\n";
    for (const auto& e : config_.models.entries())
      out_ << std::left << std::setw(42) << e.name << std::setw(10) << e.price_usd.to_string() << std::setw(7)
           << to_string(e.per) << std::setw(9) << cost_credits(e, 1, config_.billing) << e.version.value_or("-")
           << "\n";
    return kOk;
  }

  std::ostream& out_;
  std::ostream& err_;
  bool json_ = false;
  std::string command_;
  std::vector<std::string> rest_;
  std::string db_path_;
  Config config_;
  bool have_config_ = false;
  std::unique_ptr<Store> store_;
};

}  // namespace

int run_ctl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  try {
    return Ctl(out, err).run(args);
  } catch (const UsageError& e) {
    err << "predictctl: " << e.what() << "\n";
  } catch (const po::error& e) {
    err << "predictctl: " << e.what() << "\n";
  } catch (const DbError& e) {
    err << "predictctl: database error: " << e.what() << "\n";
    return 1;
  }
  return kUsage;
}

}  // namespace predictd
