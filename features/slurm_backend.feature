Feature: Jobs run as Slurm batch jobs on a GPU cluster
  On a Slurm cluster each case becomes one batch job, submitted with sbatch
  over SSH and named after the case. Slurm chooses the GPU (and sets
  CUDA_VISIBLE_DEVICES); caseflow's slots of a group are the most jobs it keeps
  in Slurm's queue for that group. caseflow asks about all its jobs with one
  command per tick (squeue, and sacct for jobs squeue has forgotten). A job Slurm
  took away (its node failed, it was preempted) runs again as a new run; a job that
  failed by itself (its exit code, its time limit) does not.
  (These scenarios run against a real one-node Slurm cluster with 2 GPUs.)

  Background:
    Given the GPU host is a Slurm cluster with 2 GPUs
    And caseflow keeps up to 3 jobs of gpu_a in Slurm's queue

  Scenario: A case runs to success and its results come home
    Given caseflow is running
    When the case folder "brain_0001" is dropped into the inbox
    Then the case "brain_0001" ends in success
    And the results of "brain_0001" are output/result.txt, job_env.txt and caseflow-job.log
    And the job log among the results of "brain_0001" says "job of case"
    And the job of "brain_0001" saw the one GPU Slurm gave it
    And Slurm ran exactly one job for "brain_0001", named after the case, and it COMPLETED

  Scenario: A failing job reports its exit code
    Given caseflow is running
    When the case folder "brain_0002" whose job exits with code 3 is dropped into the inbox
    Then the case "brain_0002" ends in failure
    And the reason given for "brain_0002" mentions "FAILED, exit code 3"
    And the exit code of "brain_0002" is 3
    And the job log among the results of "brain_0002" says "job of case"

  Scenario: A third GPU case waits in Slurm's queue while two run
    Given caseflow is running
    When the case folders "brain_0003", "brain_0004" and "brain_0005" for gpu_a whose jobs wait to be released are dropped into the inbox
    Then two of them run on a GPU each and the third waits in Slurm for resources
    And caseflow status shows the waiting one as "PENDING (Resources)"
    When the jobs of all three are released
    Then the cases "brain_0003", "brain_0004" and "brain_0005" end in success
    And no GPU slot is held

  Scenario: An operator cancels a running case and its Slurm job is cancelled
    Given caseflow is running
    And the case "brain_0006" for gpu_a is running and waits to be released
    And the Slurm job of "brain_0006" is RUNNING
    When the operator cancels "brain_0006"
    Then the case "brain_0006" ends in failure
    And the reason given for "brain_0006" is "cancelled"
    And the Slurm job of "brain_0006" is CANCELLED
    And no GPU slot is held

  Scenario: A case whose node fails runs again once the node is back
    Given caseflow submits its Slurm jobs with --no-requeue
    And caseflow is running
    And the case "brain_0007" for gpu_a is running and waits to be released
    And the Slurm job of "brain_0007" is RUNNING
    When the node of the Slurm cluster goes down under the job of "brain_0007"
    Then the Slurm job of "brain_0007" is NODE_FAIL
    And the history of "brain_0007" says "rerun 1 of 2: node NODE failed (Slurm NODE_FAIL)"
    And once the node is back the job of "brain_0007" runs again in Slurm, as run 2
    When the job of "brain_0007" is released
    Then the case "brain_0007" ends in success
    And Slurm ran two jobs for "brain_0007": the first NODE_FAIL, the second COMPLETED
    And no GPU slot is held

  Scenario: A case over its time limit ends in failure and is not run again
    Given caseflow gives its Slurm jobs a time limit of 1 minute
    And caseflow is running
    And the case "brain_0008" for gpu_a is running and waits to be released
    When Slurm ends the job of "brain_0008" at its time limit
    Then the case "brain_0008" ends in failure
    And the reason given for "brain_0008" mentions "TIMEOUT"
    And Slurm ran exactly one job for "brain_0008", named after the case, and it TIMEOUT
    And the case "brain_0008" is on its first run
