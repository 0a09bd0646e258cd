/* A test-and-test-and-set spinlock for very short critical sections. */
#ifndef DANGO_COMMON_SPINLOCK_H
#define DANGO_COMMON_SPINLOCK_H

#include <sched.h>

#if defined(__x86_64__) || defined(__i386__)
#define dango_cpu_relax() __builtin_ia32_pause()
#else
#define dango_cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

typedef struct dango_spinlock {
    int locked;
} dango_spinlock_t;

#define DANGO_SPINLOCK_INIT                                                    \
    {                                                                          \
        0                                                                      \
    }

static inline void dango_spin_init(dango_spinlock_t *l)
{
    __atomic_store_n(&l->locked, 0, __ATOMIC_RELAXED);
}

static inline void dango_spin_lock(dango_spinlock_t *l)
{
    unsigned spins = 0;

    for (;;) {
        if (!__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE)) {
            return;
        }

        while (__atomic_load_n(&l->locked, __ATOMIC_RELAXED)) {
            /* On 2 cores the holder may be descheduled: yield soon. */
            if (++spins > 64) {
                sched_yield();
                spins = 0;
            } else {
                dango_cpu_relax();
            }
        }
    }
}

static inline int dango_spin_trylock(dango_spinlock_t *l)
{
    return !__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE);
}

static inline void dango_spin_unlock(dango_spinlock_t *l)
{
    __atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE);
}

#endif
