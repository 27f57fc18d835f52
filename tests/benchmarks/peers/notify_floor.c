/* The floor of any seccomp-user-notification supervisor, for
 * bench_syscall.py: the least a supervisor can do per trapped FICLONE,
 * compiled, with no interpreter to start.
 *
 *     notify_floor [--readlink] CMD ARGS...
 *
 * Traps ioctl(FICLONE) in CMD and its descendants and answers every call
 * CONTINUE. With --readlink it first reads /proc/PID/fd/N of the
 * destination descriptor, which is the least a supervisor deciding by the
 * file's path must do (the kernel does not hand the path over, and a
 * descriptor number alone says nothing: it is reused as soon as it is
 * closed). Whatever fakefs run costs above this peer is its own; what this
 * peer costs above the plain run is the kernel's round trip and wake-ups,
 * which no user-space supervisor avoids.
 *
 * Not part of cowprobe: built into a temporary directory by the benchmark.
 * x86-64 and aarch64, like fakefs's filter. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/fs.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__x86_64__)
#define OUR_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define OUR_ARCH AUDIT_ARCH_AARCH64
#else
#error "x86-64 and aarch64 only"
#endif

static int with_readlink;

/* The listener is made in the child (a filter's listener belongs to the
 * task that installs it) and handed to the parent over a socketpair. */
static void send_fd(int sock, int fd) {
    char byte = 0;
    struct iovec io = {&byte, 1};
    char ctl[CMSG_SPACE(sizeof(int))] = {0};
    struct msghdr msg = {.msg_iov = &io, .msg_iovlen = 1,
                         .msg_control = ctl, .msg_controllen = sizeof ctl};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    if (sendmsg(sock, &msg, 0) < 0)
        _exit(126);
}

static int recv_fd(int sock) {
    char byte;
    struct iovec io = {&byte, 1};
    char ctl[CMSG_SPACE(sizeof(int))];
    struct msghdr msg = {.msg_iov = &io, .msg_iovlen = 1,
                         .msg_control = ctl, .msg_controllen = sizeof ctl};
    int fd;
    if (recvmsg(sock, &msg, 0) <= 0 || CMSG_FIRSTHDR(&msg) == NULL)
        return -1;
    memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof fd);
    return fd;
}

static void *answer(void *arg) {
    int listener = *(int *)arg;
    struct seccomp_notif req;
    struct seccomp_notif_resp resp;
    char link[64], target[4096];
    for (;;) {
        /* RECV insists on a zeroed buffer (EINVAL otherwise). */
        memset(&req, 0, sizeof req);
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0) {
            /* ENOENT: the caller was killed before we took its call. */
            if (errno == EINTR || errno == ENOENT)
                continue;
            return NULL;
        }
        if (with_readlink) {
            snprintf(link, sizeof link, "/proc/%u/fd/%d", req.pid, (int)req.data.args[0]);
            if (readlink(link, target, sizeof target) < 0)
                target[0] = 0;
        }
        memset(&resp, 0, sizeof resp);
        resp.id = req.id;
        resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
    }
}

int main(int argc, char **argv) {
    int first = 1, pair[2], listener, status;
    pid_t pid;
    pthread_t thread;
    if (argc > 1 && strcmp(argv[1], "--readlink") == 0) {
        with_readlink = 1;
        first = 2;
    }
    if (first >= argc) {
        fprintf(stderr, "usage: notify_floor [--readlink] CMD ARGS...\n");
        return 2;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
        return 125;
    pid = fork();
    if (pid < 0)
        return 125;
    if (pid == 0) {
        struct sock_filter prog[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, OUR_ARCH, 1, 0),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 1, 0),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
            /* The request is an unsigned int: its low 32 bits only. */
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, FICLONE, 1, 0),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
        };
        struct sock_fprog fprog = {sizeof prog / sizeof prog[0], prog};
        /* Without it an unprivileged caller may not install a filter;
         * fakefs run sets it too, so both pay alike. */
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
            _exit(126);
        listener = syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER,
                           SECCOMP_FILTER_FLAG_NEW_LISTENER, &fprog);
        if (listener < 0) {
            perror("notify_floor: seccomp");
            _exit(126);
        }
        send_fd(pair[1], listener);
        close(listener);
        execvp(argv[first], argv + first);
        perror("notify_floor: exec");
        _exit(127);
    }
    close(pair[1]);
    listener = recv_fd(pair[0]);
    if (listener < 0) {
        waitpid(pid, &status, 0);
        return 126;
    }
    /* Never joined: it blocks in RECV, which nothing wakes once CMD's
     * tasks are gone; it ends with the process. */
    if (pthread_create(&thread, NULL, answer, &listener) != 0)
        return 125;
    if (waitpid(pid, &status, 0) < 0)
        return 125;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
