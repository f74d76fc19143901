/*
 * err.h - the class of an error, which decides what the main loop does with it
 */
#ifndef COPYSINK_ERR_H
#define COPYSINK_ERR_H

typedef enum cs_err {
	CS_OK = 0,
	CS_ERR_RETRIABLE, /* PostgreSQL or Kafka unavailable: roll back, back off, retry */
	CS_ERR_DATA,      /* this entry or row is bad: dead-letter it and go on */
	CS_ERR_FENCED,    /* another worker owns the partition now: drop the batch */
	CS_ERR_FATAL,     /* configuration or programming error: stop */
} cs_err_t;

/* Lower-case name of an error class ("retriable", ...). */
static inline const char *cs_err_name(cs_err_t err)
{
	static const char *const names[] = {"ok", "retriable", "data", "fenced", "fatal"};
	return names[err];
}

#endif /* COPYSINK_ERR_H */
