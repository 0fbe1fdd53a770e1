#include "sys/run_as.h"

#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "sys/linux_syscalls.h"

namespace coppice::sys {

namespace {

// Set on a run_as thread: the ids it carries, so nested run_as work for the
// same ids runs inline (a thread without capabilities could not set them).
thread_local const Credentials* t_current = nullptr;

struct Job {
  const Credentials* creds;
  const std::function<void()>* fn;
  int err = 0;            // errno of the failed id change
  const char* step = "";  // which change failed
};

void* thread_main(void* arg) {
  auto* job = static_cast<Job*>(arg);
  const Credentials& c = *job->creds;
  // Groups and gid first: once the uid is not 0, no capability is left to
  // change them.
  if (raw::setgroups_self(c.groups.size(), c.groups.data()) != 0) {
    job->err = errno;
    job->step = "setgroups";
    return nullptr;
  }
  if (raw::setresgid_self(c.gid, c.gid, c.gid) != 0) {
    job->err = errno;
    job->step = "setresgid";
    return nullptr;
  }
  if (raw::setresuid_self(c.uid, c.uid, c.uid) != 0) {
    job->err = errno;
    job->step = "setresuid";
    return nullptr;
  }
  t_current = &c;
  (*job->fn)();
  return nullptr;
}

bool same_ids(const Credentials& a, const Credentials& b) {
  return a.uid == b.uid && a.gid == b.gid && a.groups == b.groups;
}

}  // namespace

Credentials own_credentials() { return Credentials{::geteuid(), ::getegid(), {}}; }

Status run_with_credentials(const Credentials& creds, const std::function<void()>& fn) {
  if ((t_current && same_ids(*t_current, creds)) || ::geteuid() != 0 ||
      (creds.uid == ::geteuid() && creds.gid == ::getegid())) {
    fn();
    return ok();
  }
  // A change of effective uid makes the kernel mark the whole process not
  // dumpable (its /proc files then belong to root); envd's own state is put
  // back once the thread is gone.
  int dumpable = ::prctl(PR_GET_DUMPABLE);

  pthread_attr_t attr;
  if (int e = ::pthread_attr_init(&attr); e != 0) return errno_error("pthread_attr_init", e);
  // Signals stay with the process's own threads.
  sigset_t all;
  sigfillset(&all);
  ::pthread_attr_setsigmask_np(&attr, &all);
  Job job{&creds, &fn};
  pthread_t th;
  int e = ::pthread_create(&th, &attr, thread_main, &job);
  ::pthread_attr_destroy(&attr);
  if (e != 0) return errno_error("start a thread for uid " + std::to_string(creds.uid), e);
  ::pthread_join(th, nullptr);
  if (dumpable > 0 && ::prctl(PR_GET_DUMPABLE) != dumpable) ::prctl(PR_SET_DUMPABLE, dumpable);
  if (job.err != 0) {
    return make_error(ErrorCode::kPermissionDenied,
                      "act as uid " + std::to_string(creds.uid) + " gid " + std::to_string(creds.gid) + ": " +
                          job.step + ": " + std::string(errno_name(job.err)) + " (" + strerror(job.err) + ")",
                      job.err);
  }
  return ok();
}

}  // namespace coppice::sys
