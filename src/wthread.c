/*
 * wthread.c - the writer thread: writes one batch while the loop decodes the next
 */
#include "copysink/wthread.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct cs_wthread {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	cs_writer_t *writer;
	cs_writer_reject_fn reject;
	void *opaque;
	/* the job, guarded by lock */
	cs_batch_t *batch;
	const int64_t *expected;
	bool pending;  /* submitted, not yet picked up */
	bool busy;     /* submitted, outcome not yet collected */
	bool done;     /* outcome ready */
	bool quit;
	cs_err_t err;
	int64_t ms;
	char errstr[1024];
};

/* Monotonic milliseconds. */
static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The thread: wait for a job, write it, publish the outcome. */
static void *run(void *arg)
{
	cs_wthread_t *t = arg;

	pthread_mutex_lock(&t->lock);
	for (;;) {
		int64_t t0;
		cs_err_t err;

		while (!t->pending && !t->quit)
			pthread_cond_wait(&t->cond, &t->lock);
		if (!t->pending && t->quit)
			break;
		t->pending = false;
		pthread_mutex_unlock(&t->lock);
		t0 = mono_ms();
		err = cs_writer_write(t->writer, t->batch, t->expected, t->reject, t->opaque,
				      t->errstr, sizeof(t->errstr));
		pthread_mutex_lock(&t->lock);
		t->err = err;
		t->ms = mono_ms() - t0;
		t->done = true;
		pthread_cond_broadcast(&t->cond);
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

cs_wthread_t *cs_wthread_new(cs_writer_t *writer, cs_writer_reject_fn reject, void *opaque)
{
	cs_wthread_t *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	t->writer = writer;
	t->reject = reject;
	t->opaque = opaque;
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
	if (pthread_create(&t->thread, NULL, run, t) != 0) {
		pthread_cond_destroy(&t->cond);
		pthread_mutex_destroy(&t->lock);
		free(t);
		return NULL;
	}
	return t;
}

void cs_wthread_destroy(cs_wthread_t *t)
{
	if (t == NULL)
		return;
	pthread_mutex_lock(&t->lock);
	t->quit = true;
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
	pthread_join(t->thread, NULL);
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

void cs_wthread_submit(cs_wthread_t *t, cs_batch_t *b, const int64_t *expected)
{
	pthread_mutex_lock(&t->lock);
	t->batch = b;
	t->expected = expected;
	t->pending = true;
	t->busy = true;
	t->done = false;
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
}

bool cs_wthread_busy(cs_wthread_t *t)
{
	bool busy;

	pthread_mutex_lock(&t->lock);
	busy = t->busy;
	pthread_mutex_unlock(&t->lock);
	return busy;
}

bool cs_wthread_done(cs_wthread_t *t)
{
	bool done;

	pthread_mutex_lock(&t->lock);
	done = t->done;
	pthread_mutex_unlock(&t->lock);
	return done;
}

bool cs_wthread_wait_done(cs_wthread_t *t, int timeout_ms)
{
	struct timespec until;
	bool done;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&t->lock);
	while (t->busy && !t->done &&
	       pthread_cond_timedwait(&t->cond, &t->lock, &until) == 0)
		;
	done = !t->busy || t->done;
	pthread_mutex_unlock(&t->lock);
	return done;
}

cs_err_t cs_wthread_wait(cs_wthread_t *t, int64_t *ms, char *errstr, size_t errstr_size)
{
	cs_err_t err;

	pthread_mutex_lock(&t->lock);
	while (t->busy && !t->done)
		pthread_cond_wait(&t->cond, &t->lock);
	err = t->busy ? t->err : CS_OK;
	if (ms != NULL)
		*ms = t->busy ? t->ms : 0;
	if (t->busy && err != CS_OK)
		snprintf(errstr, errstr_size, "%s", t->errstr);
	t->busy = false;
	t->done = false;
	pthread_mutex_unlock(&t->lock);
	return err;
}
